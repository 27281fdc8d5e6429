// The model as the planner sees it: per layer, what it costs in parameters, FLOPs and memory.
//
// Derived from the layers in stages/model.cpp, op by op (H hidden, I intermediate, T seq_len,
// n heads, V vocab, d dtype bytes; per token):
//
//   saved for backward (what LibTorch autograd keeps alive between forward and backward)
//     block: ln1 input H, ln1 output H (qkv's input), qkv output 3H (q, k, v are views of it),
//            softmax output n*T (also matmul(probs, v)'s input), attention output H (attn_out's
//            input, a copy made by reshape), ln2 input H, ln2 output H, gelu input I, gelu output I
//            -> d * (8H + 2I + nT), plus LayerNorm mean and rstd: 4 float32 = 16 bytes
//     embed: the token ids (int64)                                     -> 8 bytes
//     head:  norm input H, norm output H (lm_head's input), log_softmax output V (float32 for the
//            loss), norm statistics                                    -> d * 2H + 4V + 8
//   transient (alive only while one micro-batch runs through the layer, forward or backward)
//     per token  block: the gradient of the attention scores            -> d * nT
//                head:  the gradients of log_softmax and of the logits  -> 8V
//     per layer  the largest weight gradient, computed into a temporary and then added to .grad:
//                block d * max(H*I, 3H*H), head d * H*V, embed d * V*H
//     (fitted to counted allocations: benchmarks/README.md, "activation memory")
//   FLOPs, forward (multiply-add = 2)
//     block: 2 * (3H*H + H*H + 2*H*I) + attention 2 * 2 * T * H (the full T x T product is computed,
//            then masked)                                              = 8H^2 + 4HI + 4TH
//     head:  2HV;  embed: H (the position add)
//   backward = 2 x forward (gradients of inputs and of weights), embed: scatter-add H.
//
// tests/test_estimate_calibration.cpp and benchmarks/bench_activation_memory.cpp compare these
// figures with bytes counted by an instrumented CPU allocator (benchmarks/README.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "memory/model_config.h"

namespace pipetrain {

struct LayerCost {
  std::string name;                      // "embed", "block 3", "head"
  int64_t params = 0;
  double forward_flops_per_token = 0.0;
  double backward_flops_per_token = 0.0;
  int64_t saved_bytes_per_token = 0;      // kept from forward until backward
  int64_t transient_bytes_per_token = 0;  // working memory while the layer runs, per token
  int64_t transient_bytes_fixed = 0;      // working memory while the layer runs, per micro-batch
  int64_t output_bytes_per_token = 0;     // the activation handed to the next layer
  int64_t input_bytes_per_token = 0;      // the activation it receives
};

struct ModelDesc {
  ModelConfig config;
  std::vector<LayerCost> layers;  // [embed, block 0 .. block L-1, head]
};

ModelDesc describe_model(const ModelConfig& model);

}  // namespace pipetrain
