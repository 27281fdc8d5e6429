// Optimizers as plain data: settings, and the registered kinds with what each keeps per parameter.
//
// The planner needs the state size before anything exists; stages/optimizers/ builds the real
// optimizer from the same registered name (and a test checks that every kind registered here has
// an implementation there). An unknown name is an InputError everywhere, never a default.
//   adamw: two moments                           -> 2 x state dtype bytes per parameter (8 in float32)
//   sgd:   one momentum buffer with momentum > 0 -> 1 x state dtype bytes, else 0
//
//   OptimizerConfig o;  o.kind = OptimizerKind::named("sgd");  o.momentum = 0.9;
//   optimizer_state_bytes_per_param(o);   // 4
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "memory/model_config.h"  // Dtype

namespace pipetrain {

struct OptimizerConfig;

// What a registered optimizer kind states about itself.
struct OptimizerDef {
  std::string name;             // as configs spell it: "adamw"
  bool uses_momentum;           // train.momentum applies
  int (*state_tensors)(const OptimizerConfig& config);  // per parameter, each in the state dtype
  // Bytes per parameter LibTorch's unfused implementation moves through memory in a step over
  // float32 parameters (a pass per tensor operation): what the planner charges it.
  double (*library_step_bytes)(const OptimizerConfig& config);
  std::string (*label)(const OptimizerConfig& config);  // "AdamW", "SGD with momentum"
  // The settings of this kind a remedy may propose (each with its own state size).
  std::vector<OptimizerConfig> (*settings)(const OptimizerConfig& base);
};

// A registered optimizer kind.
class OptimizerKind {
 public:
  // Throws InputError naming `name` and the registered kinds.
  static OptimizerKind named(const std::string& name);
  // Looked up once: the planner asks for them per candidate.
  static OptimizerKind adamw() {
    static const OptimizerKind kind = named("adamw");
    return kind;
  }
  static OptimizerKind sgd() {
    static const OptimizerKind kind = named("sgd");
    return kind;
  }
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
  Dtype state_dtype = Dtype::kFloat32;  // the moments: float32 or bfloat16 (precision.moments)
};

int64_t optimizer_state_bytes_per_param(const OptimizerConfig& optimizer);

// How a stage's optimizer steps, decided here once: stages/stage_optimizer.h follows it, the memory
// estimate and the cost model count it.
struct OptimizerMethod {
  bool masters = false;  // float32 master weights apart from the compute weights: 16-bit compute,
                         // or the optimizer living apart from the layers (in RAM for a GPU stage)
  bool fused = false;    // the fused CPU AdamW (stages/kernels/cpu_adamw.h): AdamW stepping float32 in RAM
  Dtype state = Dtype::kFloat32;  // its state tensors: the configured state dtype for the fused
                                  // AdamW; LibTorch's keep the dtype of what they step
  int64_t state_bytes_per_param = 0;
};
OptimizerMethod optimizer_method(const OptimizerConfig& optimizer, Dtype compute, bool home_is_cpu, bool home_is_device);
// float32 or bfloat16 as optimizer state; InputError naming the value otherwise.
Dtype parse_state_dtype(const std::string& name);

// "AdamW", "SGD with momentum", "SGD without momentum" (with "bfloat16 moments" when so).
std::string optimizer_label(const OptimizerConfig& optimizer);

// Every registered kind's settings a remedy may propose, in registration order.
std::vector<OptimizerConfig> optimizer_settings(const OptimizerConfig& base);

}  // namespace pipetrain
