// A C interface to SentencePiece, built as its own shared module and loaded by runtime/data/
// tokenizer.cpp with dlopen (RTLD_LOCAL | RTLD_DEEPBIND), never linked into pipetrain.
//
// Why: Debian's libsentencepiece carries its own copy of protobuf-lite and exports its symbols.
// Linked into a process that also loads LibTorch (and with it libprotobuf.so.32), the two copies
// interpose each other's symbols and the process crashes in protobuf's static initialisation,
// before main. Loaded this way, SentencePiece binds to its own copy and LibTorch's protobuf never
// sees it.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstddef>
#include <cstdio>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

void set_error(char* err, size_t err_size, const std::string& what) {
  if (err != nullptr && err_size > 0) std::snprintf(err, err_size, "%s", what.c_str());
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) void* ptsp_load(const char* bytes, size_t size, char* err, size_t err_size) {
  auto* processor = new sentencepiece::SentencePieceProcessor();
  const auto status = processor->LoadFromSerializedProto(std::string(bytes, size));
  if (!status.ok()) {
    set_error(err, err_size, status.ToString());
    delete processor;
    return nullptr;
  }
  return processor;
}

__attribute__((visibility("default"))) void ptsp_free(void* processor) {
  delete static_cast<sentencepiece::SentencePieceProcessor*>(processor);
}

__attribute__((visibility("default"))) int ptsp_piece_size(void* processor) {
  return static_cast<sentencepiece::SentencePieceProcessor*>(processor)->GetPieceSize();
}

// Hands the ids to sink(context, ids, count); 0 on success.
__attribute__((visibility("default"))) int ptsp_encode(void* processor, const char* text, size_t size,
                                                        void (*sink)(void*, const int*, size_t), void* context, char* err,
                                                        size_t err_size) {
  std::vector<int> ids;
  const auto status = static_cast<sentencepiece::SentencePieceProcessor*>(processor)->Encode(std::string(text, size), &ids);
  if (!status.ok()) {
    set_error(err, err_size, status.ToString());
    return 1;
  }
  sink(context, ids.data(), ids.size());
  return 0;
}

__attribute__((visibility("default"))) int ptsp_decode(void* processor, const int* ids, size_t count,
                                                        void (*sink)(void*, const char*, size_t), void* context, char* err,
                                                        size_t err_size) {
  std::string text;
  const auto status =
      static_cast<sentencepiece::SentencePieceProcessor*>(processor)->Decode(std::vector<int>(ids, ids + count), &text);
  if (!status.ok()) {
    set_error(err, err_size, status.ToString());
    return 1;
  }
  sink(context, text.data(), text.size());
  return 0;
}

// Trains with `count` key/value arguments (SentencePieceTrainer's kwargs); 0 on success.
__attribute__((visibility("default"))) int ptsp_train(const char* const* keys, const char* const* values, size_t count,
                                                       char* err, size_t err_size) {
  std::unordered_map<std::string, std::string> args;
  for (size_t i = 0; i < count; ++i) args[keys[i]] = values[i];
  const auto status = sentencepiece::SentencePieceTrainer::Train(args);
  if (!status.ok()) {
    set_error(err, err_size, status.ToString());
    return 1;
  }
  return 0;
}

}  // extern "C"
