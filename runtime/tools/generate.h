// `pipetrain generate`: text from a trained model, token by token with a KV cache, each token
// streamed as it is chosen. runtime/tools/decode.h holds the pieces (loading a checkpoint into a
// model, sampling, the decoding loop); this header needs no LibTorch, so the command includes it alone.
//
//   GenerateRequest request;  request.source = "runs/x";  request.prompt = "This License";
//   request.options.max_tokens = 200;
//   return run_generate(request);   // text to stdout, where it came from and the timing to stderr
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace pipetrain {

struct GenerateOptions {
  int64_t max_tokens = 200;
  double temperature = 0.8;  // 0: greedy (the most likely token, always)
  int64_t top_k = 0;         // keep the k most likely tokens; 0: all
  double top_p = 1.0;        // keep the fewest tokens whose probabilities sum to top_p; 1: all
  uint64_t seed = 1234;
};

// InputError naming the value when an option is out of range.
void check_generate_options(const GenerateOptions& options);

struct GenerateRequest {
  std::string source;                 // a run directory or a checkpoint directory
  std::optional<std::string> prompt;  // nothing: read stdin to its end
  GenerateOptions options;
  std::string device = "auto";        // cpu, cuda:N, or auto (cuda:0 when there is one)
  bool cached = true;                 // false: every token re-reads the whole context
};

// Loads the model and the run's tokenizer, writes the prompt and then each token's text to stdout
// as it is chosen; returns the exit status. InputError for a bad option, source or prompt.
int run_generate(const GenerateRequest& request);

}  // namespace pipetrain
