// A stage's optimizer, wherever its state lives (stages/stage.h builds one per stage).
//
// The parameters a stage computes with live on its device in its compute dtype. The optimizer's
// state lives at its home: the stage's device, or CPU RAM for a GPU stage (optimizer: cpu). Four
// ways to step, chosen from those facts:
//
//   master weights?  no: the parameters are float32 (or float64) on the home device, and the
//                    optimizer steps them in place;
//                    yes (16-bit compute, or a home apart from the device): float32 copies of the
//                    weights live at home; a step takes the gradients there, updates the copies,
//                    and writes the compute weights back from them.
//   implementation   AdamW at home in CPU RAM: the fused CPU kernel (stages/kernels/cpu_adamw.h),
//                    one pass over memory, its moments float32 or bfloat16; otherwise the registered
//                    kind's LibTorch optimizer (stages/optimizers/).
//
// Checkpoints hold each parameter's weights as the optimizer keeps them (the float32 master when
// there is one) and the state under the LibTorch names ("step", "exp_avg", "exp_avg_sq",
// "momentum_buffer"), so a checkpoint loads whichever way the resuming stage steps.
//
//   StageOptimizer opt(layers->named_parameters(), config, device, torch::kBFloat16, /*home=*/torch::kCPU, 4);
//   layers->to(device, torch::kBFloat16);   // the optimizer keeps the same parameter objects
//   opt.bind();
//   opt.step(lr, /*grad_scale=*/clip / loss_scale);
#pragma once

#include <torch/types.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "memory/optimizer_config.h"

namespace torch::optim {
class Optimizer;
}

namespace pipetrain {

class StageOptimizer;

// A layer's parameters (name, the tensor `optimizer` knows it by) as a checkpoint names them:
// "param/<name>" (the weights as the optimizer keeps them) and "state/<name>/<key>".
using NamedParameters = std::vector<std::pair<std::string, torch::Tensor>>;
std::vector<std::pair<std::string, torch::Tensor>> named_layer_state(const StageOptimizer& optimizer,
                                                                    const NamedParameters& params);
// Restores what named_layer_state wrote (possibly under another stage map or kind of step) into
// layer `layer`'s parameters; throws std::runtime_error naming the tensor that is missing, extra or
// of the wrong shape.
void restore_named_layer_state(StageOptimizer& optimizer, const NamedParameters& params, int64_t layer,
                               const std::vector<std::pair<std::string, torch::Tensor>>& tensors);

class StageOptimizer {
 public:
  // `params`: the stage's parameters with their initial values, before the stage moves them to
  // `device` and casts them to `compute` (masters are copied from these, so float32 values stay
  // exact). `home`: where the state lives. `threads`: the fused kernel's threads.
  StageOptimizer(const torch::OrderedDict<std::string, torch::Tensor>& params, const OptimizerConfig& config,
                 torch::Device device, torch::Dtype compute, torch::Device home, int threads);
  ~StageOptimizer();
  StageOptimizer(const StageOptimizer&) = delete;
  StageOptimizer& operator=(const StageOptimizer&) = delete;

  // Binds the parameters as the stage now computes with them (moved and cast): call once, after.
  void bind();

  // One step at learning rate `lr`, every gradient multiplied by `grad_scale` first (clipping, and
  // a loss scale undone); then the compute weights hold the updated values.
  void step(double lr, double grad_scale);
  void zero_grad();

  // "LibTorch AdamW in place", "fused CPU AdamW on float32 masters (bfloat16 state)", ...
  std::string describe() const;
  bool has_masters() const { return masters_; }

  // Parameter `param` (one of the stage's) as the optimizer keeps it: the float32 master, or the
  // parameter itself; and its state, empty before its first step.
  torch::Tensor weights_of(const torch::Tensor& param) const;
  std::vector<std::pair<std::string, torch::Tensor>> state_of(const torch::Tensor& param) const;
  // Restores both (from a checkpoint, possibly written by another kind of step): the compute
  // weights are refreshed from `weights`. Throws std::runtime_error naming a key that does not fit.
  void restore(const torch::Tensor& param, const torch::Tensor& weights,
               const std::vector<std::pair<std::string, torch::Tensor>>& state);

 private:
  struct Slot;
  size_t index_of(const torch::Tensor& param) const;
  void step_fused(double lr, double grad_scale);
  void step_library(double lr, double grad_scale);

  OptimizerConfig config_;
  torch::Device home_;
  int threads_;
  bool masters_ = false;
  bool fused_ = false;
  std::vector<Slot> slots_;
  std::unique_ptr<torch::optim::Optimizer> library_;  // over the masters, or the parameters
};

}  // namespace pipetrain
