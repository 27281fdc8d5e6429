// Training data: one or more text files, memory-mapped, as tokens cut into sequences.
//
// Tokens are the files' bytes, or with a tokenizer (runtime/data/tokenizer.h) their subword ids,
// computed once per file and cached beside it in a memory-mappable file (NAME.tok-<fingerprint>:
// a header, then int32 ids). The cache holds the size and FNV-1a of the text and of the tokenizer
// model it was made from; when either changes it is made again. Where the corpus's folder cannot be
// written, or belongs to the system (/usr, /etc, ...: the default data's /usr/share/common-licenses),
// the cache goes to $XDG_CACHE_HOME/pipetrain/tokens (default ~/.cache).
//
// Each file (or its cache) is mapped read-only (the page cache holds it once; nothing copies the
// corpus). The last val_fraction of every file's tokens is held out for validation. The training
// part of each file is cut into windows of seq_len + 1 tokens at a stride of seq_len (inputs and
// next-token targets); every epoch visits all windows once in an order shuffled deterministically
// from (seed, epoch). Validation batches come from one fixed shuffle of the held-out windows, so a
// few batches sample every file.
//
//   Corpus corpus({"/usr/share/common-licenses/GPL-3"}, /*seq_len=*/128, /*val_fraction=*/0.1, 1234);
//   std::vector<int64_t> batch = corpus.next_train_batch(8);   // 8 x 129 tokens, row-major
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/data/tokenizer.h"

namespace pipetrain {

// data.tokenizer's model for a corpus: bytes (""), the named SentencePiece model, or for "auto:N"
// a model of exactly N pieces trained on `files` at first use. That model is cached like the tokens
// (beside the first file, else under $XDG_CACHE_HOME/pipetrain/tokens) under a name made of N and
// the files' contents, so every run and bench on the same text reads the same model (SentencePiece
// training is not bit-for-bit repeatable). A run keeps its own copy (runtime/train/session.cpp).
Tokenizer corpus_tokenizer(const std::string& value, const std::vector<std::string>& files);

// Where the training stream stands: enough to resume it exactly.
struct DataPosition {
  int64_t epoch = 0;
  int64_t cursor = 0;  // windows of this epoch already handed out
};

class Corpus {
 public:
  // Throws InputError naming the file for a missing, unreadable, empty or binary file, and for a
  // corpus too short to give one training and one validation window. `tokenizer`: bytes when
  // absent (or Tokenizer::bytes()).
  Corpus(const std::vector<std::string>& files, int64_t seq_len, double val_fraction, uint64_t seed,
         const Tokenizer& tokenizer = Tokenizer::bytes());
  ~Corpus();
  Corpus(const Corpus&) = delete;
  Corpus& operator=(const Corpus&) = delete;

  int64_t seq_len() const { return seq_len_; }
  int64_t total_bytes() const { return total_bytes_; }
  int64_t total_tokens() const { return total_tokens_; }
  const std::string& tokenizer() const { return tokenizer_; }  // Tokenizer::describe()
  // FNV-1a over every file's size and contents, in order; and the tokenizer's (0 for bytes).
  uint64_t fingerprint() const { return fingerprint_; }
  uint64_t tokenizer_fingerprint() const { return tokenizer_fingerprint_; }
  // Where each file's tokens were read from: the file itself, or its token cache.
  const std::vector<std::string>& token_sources() const { return token_sources_; }
  int64_t num_train_windows() const { return static_cast<int64_t>(train_windows_.size()); }
  int64_t num_val_windows() const { return static_cast<int64_t>(val_windows_.size()); }

  // `rows` training windows of seq_len + 1 tokens each, row-major; advances the position.
  std::vector<int64_t> next_train_batch(int64_t rows);
  // Validation batch `index`: the held-out windows in one fixed shuffled order, cycling.
  std::vector<int64_t> val_batch(int64_t index, int64_t rows) const;

  DataPosition position() const { return position_; }
  void set_position(const DataPosition& position);

 private:
  struct Mapping {
    std::string path;           // what is mapped: the text, or its token cache
    void* base = nullptr;
    size_t mapped = 0;
    const unsigned char* bytes = nullptr;  // byte tokens, or
    const int32_t* ids = nullptr;          // cached subword ids
    int64_t tokens = 0;
  };
  struct Window {
    int32_t file;
    int64_t offset;
  };

  void append_window(const Window& window, std::vector<int64_t>& out) const;
  void shuffle_epoch();
  static std::vector<int64_t> shuffled_indices(size_t n, uint64_t seed);

  int64_t seq_len_;
  uint64_t seed_;
  uint64_t fingerprint_ = 0xcbf29ce484222325ULL;
  int64_t total_bytes_ = 0;
  int64_t total_tokens_ = 0;
  int64_t vocab_size_ = 256;
  std::string tokenizer_;
  uint64_t tokenizer_fingerprint_ = 0;
  std::vector<std::string> token_sources_;
  std::vector<Mapping> mappings_;
  std::vector<Window> train_windows_;  // in file order
  std::vector<Window> val_windows_;
  std::vector<int64_t> order_;      // this epoch's permutation of train_windows_
  std::vector<int64_t> val_order_;  // fixed permutation of val_windows_
  DataPosition position_;
};

}  // namespace pipetrain
