#include "runtime/data/tokenizer.h"

#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <utility>

#include "memory/errors.h"

namespace pipetrain {

// SentencePiece, through the module runtime/data/sentencepiece_shim.cpp (why: see there).
struct SentencePieceProcessorHandle {
  void* processor = nullptr;
};

namespace {

constexpr int64_t kByteVocabulary = 256;
// A SentencePiece model holds the 256 byte pieces and the specials first; a million pieces at most.
constexpr int64_t kMinPieces = 260;
constexpr int64_t kMaxPieces = 1'000'000;

struct Shim {
  void* (*load)(const char*, size_t, char*, size_t);
  void (*free)(void*);
  int (*piece_size)(void*);
  int (*encode)(void*, const char*, size_t, void (*)(void*, const int*, size_t), void*, char*, size_t);
  int (*decode)(void*, const int*, size_t, void (*)(void*, const char*, size_t), void*, char*, size_t);
  int (*train)(const char* const*, const char* const*, size_t, char*, size_t);
};

// Beside the executable (or one folder up, for the test binaries), else where the build put it.
std::vector<std::string> shim_candidates() {
  std::vector<std::string> out;
  char exe[4096];
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n > 0) {
    const std::string path(exe, static_cast<size_t>(n));
    const std::string dir = path.substr(0, path.find_last_of('/'));
    out.push_back(dir + "/libpipetrain_sentencepiece.so");
    out.push_back(dir.substr(0, dir.find_last_of('/')) + "/libpipetrain_sentencepiece.so");
  }
  out.push_back(PIPETRAIN_SENTENCEPIECE_SHIM);
  return out;
}

const Shim& shim() {
  static const Shim loaded = [] {
    // Deep binding keeps SentencePiece's own protobuf for itself; the sanitizers' runtimes refuse
    // it, and the processes they check load no LibTorch (no second protobuf) anyway.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    const int flags = RTLD_NOW | RTLD_LOCAL;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
    const int flags = RTLD_NOW | RTLD_LOCAL;
#else
    const int flags = RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND;
#endif
#else
    const int flags = RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND;
#endif
    std::string tried;
    void* module = nullptr;
    for (const std::string& path : shim_candidates()) {
      module = ::dlopen(path.c_str(), flags);
      if (module != nullptr) break;
      tried += "\n  " + path + ": " + ::dlerror();
    }
    if (module == nullptr) throw std::runtime_error("cannot load pipetrain's SentencePiece module:" + tried);
    const auto symbol = [&](const char* name) {
      void* address = ::dlsym(module, name);
      if (address == nullptr) throw std::runtime_error(std::string("pipetrain's SentencePiece module lacks ") + name);
      return address;
    };
    Shim s{};
    s.load = reinterpret_cast<decltype(s.load)>(symbol("ptsp_load"));
    s.free = reinterpret_cast<decltype(s.free)>(symbol("ptsp_free"));
    s.piece_size = reinterpret_cast<decltype(s.piece_size)>(symbol("ptsp_piece_size"));
    s.encode = reinterpret_cast<decltype(s.encode)>(symbol("ptsp_encode"));
    s.decode = reinterpret_cast<decltype(s.decode)>(symbol("ptsp_decode"));
    s.train = reinterpret_cast<decltype(s.train)>(symbol("ptsp_train"));
    return s;
  }();
  return loaded;
}

constexpr int64_t kMaxModelBytes = int64_t{1} << 30;

// At most kMaxModelBytes: a file that says it is small and never ends (/proc) is refused too.
std::string read_file(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(what + " '" + path + "' cannot be read");
  std::string bytes;
  char buffer[1 << 16];
  while (in.read(buffer, sizeof(buffer)) || in.gcount() > 0) {
    bytes.append(buffer, static_cast<size_t>(in.gcount()));
    if (static_cast<int64_t>(bytes.size()) > kMaxModelBytes) throw InputError(what + " '" + path + "' is larger than 1 GiB");
  }
  return bytes;
}

}  // namespace

uint64_t fnv1a(const void* data, size_t size, uint64_t seed) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t h = seed;
  for (size_t i = 0; i < size; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

std::string hex16(uint64_t v) {
  char text[17];
  std::snprintf(text, sizeof(text), "%016llx", static_cast<unsigned long long>(v));
  return text;
}

Tokenizer Tokenizer::bytes() { return Tokenizer(); }

Tokenizer Tokenizer::load(const std::string& model_path) {
  // Not a device or a pipe that never ends, nor a file larger than any tokenizer.
  struct stat info {};
  if (::stat(model_path.c_str(), &info) != 0) throw InputError("data.tokenizer '" + model_path + "' does not exist");
  if (!S_ISREG(info.st_mode) || info.st_size > kMaxModelBytes) {
    throw InputError("data.tokenizer '" + model_path + "' is not a regular file of at most 1 GiB");
  }
  const std::string bytes = read_file(model_path, "data.tokenizer");
  Tokenizer t;
  char err[512] = "";
  void* processor = shim().load(bytes.data(), bytes.size(), err, sizeof(err));
  if (processor == nullptr) throw InputError("data.tokenizer '" + model_path + "' is not a SentencePiece model: " + err);
  t.processor_ = std::shared_ptr<SentencePieceProcessorHandle>(new SentencePieceProcessorHandle{processor},
                                                               [](SentencePieceProcessorHandle* h) {
                                                                 shim().free(h->processor);
                                                                 delete h;
                                                               });
  t.path_ = model_path;
  t.fingerprint_ = fnv1a(bytes.data(), bytes.size());
  return t;
}

Tokenizer Tokenizer::named(const std::string& model_path) {
  if (auto_tokenizer_pieces(model_path)) {
    throw InputError("data.tokenizer '" + model_path + "' is trained on the run's data.files (corpus_tokenizer), not a model file");
  }
  return model_path.empty() ? bytes() : load(model_path);
}

int64_t Tokenizer::vocab_size() const { return processor_ ? shim().piece_size(processor_->processor) : kByteVocabulary; }

std::string Tokenizer::describe() const {
  if (is_bytes()) return "bytes";
  return "sentencepiece " + path_ + " (" + std::to_string(vocab_size()) + " pieces)";
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  if (is_bytes()) return std::vector<int32_t>(reinterpret_cast<const unsigned char*>(text.data()),
                                              reinterpret_cast<const unsigned char*>(text.data()) + text.size());
  std::vector<int32_t> ids;
  char err[512] = "";
  const auto sink = [](void* out, const int* data, size_t n) { static_cast<std::vector<int32_t>*>(out)->assign(data, data + n); };
  if (shim().encode(processor_->processor, text.data(), text.size(), sink, &ids, err, sizeof(err)) != 0) {
    throw InputError("cannot encode text with '" + path_ + "': " + err);
  }
  return ids;
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids) const {
  for (int64_t id : ids) {
    if (id < 0 || id >= vocab_size()) {
      throw InputError("token " + std::to_string(id) + " is outside the vocabulary of " + std::to_string(vocab_size()) + " (" +
                       describe() + ")");
    }
  }
  if (is_bytes()) {
    std::string text;
    for (int64_t id : ids) text.push_back(static_cast<char>(id));
    return text;
  }
  std::string text;
  char err[512] = "";
  const std::vector<int> narrow(ids.begin(), ids.end());
  const auto sink = [](void* out, const char* data, size_t n) { static_cast<std::string*>(out)->assign(data, n); };
  if (shim().decode(processor_->processor, narrow.data(), narrow.size(), sink, &text, err, sizeof(err)) != 0) {
    throw InputError("cannot decode with '" + path_ + "': " + err);
  }
  return text;
}

std::optional<int64_t> auto_tokenizer_pieces(const std::string& value) {
  const std::string prefix = "auto:";
  if (value.rfind(prefix, 0) != 0) return std::nullopt;
  const std::string number = value.substr(prefix.size());
  int64_t pieces = 0;
  const bool digits = !number.empty() && number.size() <= 7 && number.find_first_not_of("0123456789") == std::string::npos;
  if (digits) pieces = std::stoll(number);
  if (!digits || pieces < kMinPieces || pieces > kMaxPieces) {
    throw InputError("data.tokenizer '" + value + "': auto:N needs N pieces in " + std::to_string(kMinPieces) + ".." +
                     std::to_string(kMaxPieces) + " (a model of N pieces is trained on data.files at first use)");
  }
  return pieces;
}

int64_t tokenizer_vocab_size(const std::string& model_path) {
  if (const auto pieces = auto_tokenizer_pieces(model_path)) return *pieces;
  return Tokenizer::named(model_path).vocab_size();
}

int64_t train_tokenizer(const TokenizerTraining& training) {
  if (training.files.empty()) throw InputError("--files is empty: give the text files to train the tokenizer on");
  const std::string suffix = ".model";
  if (training.out.size() <= suffix.size() || training.out.compare(training.out.size() - suffix.size(), suffix.size(), suffix) != 0) {
    throw InputError("--out '" + training.out + "' must end in .model (SentencePiece writes NAME.model and NAME.vocab)");
  }
  if (training.vocab_size < kMinPieces || training.vocab_size > kMaxPieces) {
    throw InputError("--vocab-size " + std::to_string(training.vocab_size) + " is outside " + std::to_string(kMinPieces) +
                     ".." + std::to_string(kMaxPieces) + " (the 256 byte pieces and the specials come first)");
  }
  if (training.model_type != "unigram" && training.model_type != "bpe") {
    throw InputError("--model-type '" + training.model_type + "' is neither unigram nor bpe");
  }
  if (!(training.character_coverage > 0 && training.character_coverage <= 1)) {
    throw InputError("--character-coverage " + std::to_string(training.character_coverage) + " is outside (0, 1]");
  }
  std::string input;
  for (const std::string& file : training.files) {
    if (!std::ifstream(file).good()) throw InputError("--files: '" + file + "' cannot be read");
    input += (input.empty() ? "" : ",") + file;
  }
  const std::vector<std::pair<std::string, std::string>> args = {
      {"input", input},
      {"model_prefix", training.out.substr(0, training.out.size() - suffix.size())},
      {"vocab_size", std::to_string(training.vocab_size)},
      {"model_type", training.model_type},
      {"character_coverage", std::to_string(training.character_coverage)},
      {"byte_fallback", "true"},
      // Text round-trips exactly: no normalisation, whitespace kept, no space added in front (a
      // corpus is encoded in chunks, and each chunk's ids follow the previous chunk's).
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"add_dummy_prefix", "false"},
      // Unless asked for exactly, the vocabulary is an upper bound: a small corpus gets the pieces
      // it supports.
      {"hard_vocab_limit", training.exact_size ? "true" : "false"},
      // A large corpus trains on a sample of a million lines (all of them fit SentencePiece's
      // memory only while the corpus is small).
      {"input_sentence_size", "1000000"},
      {"shuffle_input_sentence", "true"},
      // Text is not cut into sentences; lines as long as 16 KiB train whole.
      {"max_sentence_length", "16384"},
      {"minloglevel", "1"},
  };
  std::vector<const char*> keys, values;
  for (const auto& [key, value] : args) {
    keys.push_back(key.c_str());
    values.push_back(value.c_str());
  }
  char err[1024] = "";
  if (shim().train(keys.data(), values.data(), args.size(), err, sizeof(err)) != 0) {
    throw InputError("SentencePiece could not train on " + input + ": " + err);
  }
  return Tokenizer::load(training.out).vocab_size();
}

}  // namespace pipetrain
