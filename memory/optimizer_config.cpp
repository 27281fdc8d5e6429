#include "memory/optimizer_config.h"

#include "memory/errors.h"

namespace pipetrain {

std::string optimizer_name(OptimizerKind kind) { return kind == OptimizerKind::kAdamW ? "adamw" : "sgd"; }

OptimizerKind parse_optimizer_kind(const std::string& name) {
  if (name == "adamw") return OptimizerKind::kAdamW;
  if (name == "sgd") return OptimizerKind::kSgd;
  throw InputError("train.optimizer is '" + name + "'; expected adamw or sgd");
}

int64_t optimizer_state_bytes_per_param(const OptimizerConfig& optimizer) {
  if (optimizer.kind == OptimizerKind::kAdamW) return 8;
  return optimizer.momentum != 0.0 ? 4 : 0;
}

}  // namespace pipetrain
