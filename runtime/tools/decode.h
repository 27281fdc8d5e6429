// Decoding a trained model: a checkpoint's weights loaded into a model, sampling, and the decoding
// loop with a KV cache (stages/model.h CachedDecoder).
//
// Context: the model has seq_len learned positions. When the prompt and what was generated fill
// them, the newest seq_len / 2 tokens become the context and decoding goes on from there (one
// re-read of those positions), so generation has no length limit; what falls out of the context
// no longer conditions the text.
//
//   LoadedModel loaded = load_model(find_checkpoint("runs/x"), torch::kCPU);
//   generate_tokens(loaded.model, prompt_tokens, options, /*cached=*/true,
//                   [](int64_t token) { std::putchar(static_cast<int>(token)); });
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "runtime/config/run_config.h"
#include "runtime/io/checkpoint.h"
#include "runtime/tools/generate.h"
#include "stages/model.h"

namespace pipetrain {

struct LoadedModel {
  RunConfig run;       // the config the checkpoint was trained with
  int64_t step = 0;    // the checkpoint's step
  LayerRange model{nullptr};  // the whole model on `device`, float32 (float64 if trained so), eval mode
};

// The checkpoint's weights in a model on `device`. InputError when a layer's file does not fit.
LoadedModel load_model(const CheckpointInfo& checkpoint, torch::Device device);

// The next token from logits [V] (any device or dtype) under `options`, drawing from `generator`.
int64_t sample_token(const torch::Tensor& logits, const GenerateOptions& options, at::Generator& generator);

// Generates up to options.max_tokens tokens after `prompt` (at least one token), handing each to
// `emit` as soon as it is chosen, and returns them. `cached`: with the KV cache (one position per
// token); without it every token re-reads the whole context. Both give the same tokens.
std::vector<int64_t> generate_tokens(LayerRange model, const std::vector<int64_t>& prompt, const GenerateOptions& options,
                                     bool cached, const std::function<void(int64_t token)>& emit);

}  // namespace pipetrain
