// Closed-form parameter counts of the pipetrain transformer, layer by layer.
//
// The planner sizes weights, gradients and optimizer state from these numbers before anything is
// allocated, so they must be exact: tests compare them with numel() of the LibTorch layers.
//
// With V = vocab_size, T = seq_len, H = hidden_dim, I = intermediate_size:
//   embed = V*H (token table) + T*H (learned positions)
//   block = 2H (ln1) + 3H*H + 3H (qkv) + H*H + H (attn out) + 2H (ln2)
//           + H*I + I (fc in) + I*H + H (fc out)
//         = 4H^2 + 2HI + 9H + I
//   head  = 2H (final ln) + H*V (LM head, no bias, not tied to the embedding so that the two
//           can live on different devices)
#pragma once

#include <cstdint>

#include "memory/model_config.h"

namespace pipetrain {

int64_t embed_param_count(const ModelConfig& model);
int64_t block_param_count(const ModelConfig& model);
int64_t head_param_count(const ModelConfig& model);
// Parameters of layer i of the ordered list [embed, block 0 .. block L-1, head].
int64_t layer_param_count(const ModelConfig& model, int64_t i);
int64_t total_param_count(const ModelConfig& model);

}  // namespace pipetrain
