// What a model reads: bytes (token = byte value, 256 of them), or subwords from a SentencePiece
// model (libsentencepiece from Debian) that `pipetrain tokenizer train` wrote and `data.tokenizer`
// names. SentencePiece models are trained with byte fallback, so any text encodes (a character the
// model never saw becomes its UTF-8 bytes) and decodes back to itself.
//
//   Tokenizer tok = Tokenizer::load("tok.model");     // Tokenizer::bytes() without one
//   std::vector<int32_t> ids = tok.encode("안녕하세요");
//   std::string text = tok.decode({ids.begin(), ids.end()});
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pipetrain {

struct SentencePieceProcessorHandle;

class Tokenizer {
 public:
  static Tokenizer bytes();
  // InputError naming the path and SentencePiece's reason when it cannot be loaded.
  static Tokenizer load(const std::string& model_path);
  // data.tokenizer's value: load(path), or bytes() when it is empty.
  static Tokenizer named(const std::string& model_path);

  bool is_bytes() const { return processor_ == nullptr; }
  int64_t vocab_size() const;
  const std::string& path() const { return path_; }  // empty for bytes
  // FNV-1a of the model file's bytes: a token cache made with another model is stale. 0 for bytes.
  uint64_t fingerprint() const { return fingerprint_; }
  // "bytes" or "sentencepiece tok.model (8000 pieces)".
  std::string describe() const;

  std::vector<int32_t> encode(std::string_view text) const;
  // Ids outside the vocabulary are an InputError naming the id.
  std::string decode(const std::vector<int64_t>& ids) const;

 private:
  std::shared_ptr<SentencePieceProcessorHandle> processor_;
  std::string path_;
  uint64_t fingerprint_ = 0;
};

// data.tokenizer "auto:N": a model of exactly N pieces, trained on the run's data.files at first
// use (corpus_tokenizer in runtime/data/corpus.h). The N of such a value, nullopt for any other;
// "auto:" with no number, or one outside 260..1000000, is an InputError naming the value.
std::optional<int64_t> auto_tokenizer_pieces(const std::string& value);

// The vocabulary size of data.tokenizer's value ("" = bytes: 256; "auto:N": N), for the config's model.
int64_t tokenizer_vocab_size(const std::string& model_path);

struct TokenizerTraining {
  std::vector<std::string> files;
  int64_t vocab_size = 8000;
  std::string out;                   // must end in ".model"; SentencePiece writes the ".vocab" beside it
  std::string model_type = "unigram";  // or "bpe"
  double character_coverage = 0.9995;  // of characters seen; the rest fall back to bytes
  bool exact_size = false;  // exactly vocab_size pieces, or an error; else a small corpus gets fewer
};

// Trains a SentencePiece model on the files (InputError naming the option, file or SentencePiece's
// reason when it cannot); returns the model's vocabulary size.
int64_t train_tokenizer(const TokenizerTraining& training);

// 64-bit FNV-1a of bytes, chained from `seed` (the cache's fingerprints).
uint64_t fnv1a(const void* data, size_t size, uint64_t seed = 0xcbf29ce484222325ULL);
// A fingerprint as 16 lowercase hex digits (file names, manifests).
std::string hex16(uint64_t v);

}  // namespace pipetrain
