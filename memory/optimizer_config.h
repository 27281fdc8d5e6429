// Optimizer settings as plain data, and what each optimizer keeps per parameter.
//
// The planner needs the state size before anything exists; stages build the real optimizer from the
// same struct.
//   AdamW: two FP32 moments          -> 8 bytes per parameter
//   SGD with momentum: one buffer    -> 4 bytes per parameter (FP32)
//   plain SGD                        -> 0
#pragma once

#include <cstdint>
#include <string>

namespace pipetrain {

enum class OptimizerKind { kAdamW, kSgd };

struct OptimizerConfig {
  OptimizerKind kind = OptimizerKind::kAdamW;
  double lr = 3e-3;
  double weight_decay = 0.01;  // weight matrices only; never biases, LayerNorm or embeddings' positions
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double momentum = 0.0;  // SGD only
};

std::string optimizer_name(OptimizerKind kind);
// Throws InputError naming the value unless it is adamw or sgd.
OptimizerKind parse_optimizer_kind(const std::string& name);

int64_t optimizer_state_bytes_per_param(const OptimizerConfig& optimizer);

}  // namespace pipetrain
