// Optimizers as plain data: settings, and the registered kinds with what each keeps per parameter.
//
// The planner needs the state size before anything exists; stages/optimizers/ builds the real
// optimizer from the same registered name (and a test checks that every kind registered here has
// an implementation there). An unknown name is an InputError everywhere, never a default.
//   adamw: two FP32 moments                           -> 8 bytes per parameter
//   sgd:   one FP32 momentum buffer with momentum > 0 -> 4 bytes per parameter, else 0
//
//   OptimizerConfig o;  o.kind = OptimizerKind::named("sgd");  o.momentum = 0.9;
//   optimizer_state_bytes_per_param(o);   // 4
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace pipetrain {

struct OptimizerConfig;

// What a registered optimizer kind states about itself.
struct OptimizerDef {
  std::string name;             // as configs spell it: "adamw"
  bool uses_momentum;           // train.momentum applies
  int64_t (*state_bytes_per_param)(const OptimizerConfig& config);
  std::string (*label)(const OptimizerConfig& config);  // "AdamW", "SGD with momentum"
  // The settings of this kind a remedy may propose (each with its own state size).
  std::vector<OptimizerConfig> (*settings)(const OptimizerConfig& base);
};

// A registered optimizer kind.
class OptimizerKind {
 public:
  // Throws InputError naming `name` and the registered kinds.
  static OptimizerKind named(const std::string& name);
  static OptimizerKind adamw() { return named("adamw"); }
  static OptimizerKind sgd() { return named("sgd"); }
  static std::vector<OptimizerKind> all();

  const OptimizerDef& def() const;
  const std::string& name() const { return def().name; }
  bool operator==(const OptimizerKind& o) const { return index_ == o.index_; }
  bool operator!=(const OptimizerKind& o) const { return index_ != o.index_; }

 private:
  explicit OptimizerKind(int index) : index_(index) {}
  int index_;
};

struct OptimizerConfig {
  OptimizerKind kind = OptimizerKind::adamw();
  double lr = 3e-3;
  double weight_decay = 0.01;  // weight matrices only; never biases, LayerNorm or embeddings' positions
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double momentum = 0.0;  // only for kinds that use it (sgd)
};

int64_t optimizer_state_bytes_per_param(const OptimizerConfig& optimizer);
// "AdamW", "SGD with momentum", "SGD without momentum".
std::string optimizer_label(const OptimizerConfig& optimizer);

// Every registered kind's settings a remedy may propose, in registration order.
std::vector<OptimizerConfig> optimizer_settings(const OptimizerConfig& base);

}  // namespace pipetrain
