#include "stages/stage_optimizer.h"

#include <torch/optim/optimizer.h>

#include <stdexcept>

#include "stages/kernels/cpu_adamw.h"
#include "stages/model.h"
#include "stages/optim.h"
#include "stages/optimizers/optimizer_impl.h"

namespace pipetrain {

// One parameter: the tensor the stage computes with, its master (when kept), and the fused
// kernel's state (when it steps it).
struct StageOptimizer::Slot {
  std::string name;
  torch::Tensor param;   // on the stage's device, in its compute dtype
  torch::Tensor master;  // float32 at home, or undefined: the parameter is its own master
  bool decays = false;
  // Fused AdamW's state: the moments at home in the state dtype, and the step count.
  torch::Tensor exp_avg, exp_avg_sq;
  int64_t step = 0;
  // The master as the optimizer steps it: the copy, or the parameter.
  const torch::Tensor& weights() const { return master.defined() ? master : param; }
};

namespace {

Elem elem_of(torch::ScalarType type) {
  switch (type) {
    case torch::kFloat32: return Elem::kF32;
    case torch::kBFloat16: return Elem::kBF16;
    case torch::kFloat16: return Elem::kF16;
    default: throw std::logic_error(std::string("the fused CPU AdamW does not handle ") + c10::toString(type));
  }
}

Dtype dtype_of(torch::Dtype type) {
  switch (type) {
    case torch::kFloat32: return Dtype::kFloat32;
    case torch::kFloat64: return Dtype::kFloat64;
    case torch::kBFloat16: return Dtype::kBFloat16;
    case torch::kFloat16: return Dtype::kFloat16;
    default: throw std::logic_error(std::string("a stage does not compute in ") + c10::toString(type));
  }
}

}  // namespace

StageOptimizer::StageOptimizer(const torch::OrderedDict<std::string, torch::Tensor>& params, const OptimizerConfig& config,
                               torch::Device device, torch::Dtype compute, torch::Device home, int threads)
    : config_(config), home_(home), threads_(threads) {
  const OptimizerMethod method = optimizer_method(config, dtype_of(compute), home.is_cpu(), home == device);
  masters_ = method.masters;
  fused_ = method.fused;
  torch::NoGradGuard no_grad;
  for (const auto& item : params) {
    Slot slot;
    slot.name = item.key();
    slot.param = item.value();
    slot.decays = parameter_decays(item.key(), item.value());
    if (masters_) slot.master = item.value().detach().to(home, torch::kFloat32, /*non_blocking=*/false, /*copy=*/true);
    slots_.push_back(std::move(slot));
  }
}

StageOptimizer::~StageOptimizer() = default;

void StageOptimizer::bind() {
  torch::NoGradGuard no_grad;
  if (fused_) {
    const torch::ScalarType state = to_torch_dtype(config_.state_dtype);
    for (Slot& slot : slots_) {
      slot.exp_avg = torch::zeros(slot.weights().sizes(), torch::TensorOptions().dtype(state).device(home_));
      slot.exp_avg_sq = torch::zeros_like(slot.exp_avg);
    }
    return;
  }
  // LibTorch's optimizer over the masters (which get the gradients at each step) or the parameters.
  torch::OrderedDict<std::string, torch::Tensor> stepped;
  for (Slot& slot : slots_) {
    if (slot.master.defined()) slot.master.set_requires_grad(true);
    stepped.insert(slot.name, slot.weights());
  }
  library_ = make_optimizer(stepped, config_);
}

void StageOptimizer::zero_grad() {
  torch::NoGradGuard no_grad;
  for (Slot& slot : slots_) {
    torch::Tensor& grad = slot.param.mutable_grad();
    if (!grad.defined()) continue;
    grad.detach_();
    grad.zero_();
  }
}

void StageOptimizer::step(double lr, double grad_scale) {
  torch::NoGradGuard no_grad;
  if (fused_) {
    step_fused(lr, grad_scale);
  } else {
    step_library(lr, grad_scale);
  }
}

void StageOptimizer::step_fused(double lr, double grad_scale) {
  for (Slot& slot : slots_) {
    if (!slot.param.grad().defined()) continue;
    // The gradient where the kernel reads it (a copy out of a GPU, in the parameter's dtype).
    const torch::Tensor grad = slot.param.grad().to(home_).contiguous();
    // The compute weights it writes: the parameter's own memory on the CPU, else a host buffer
    // copied to the device after.
    torch::Tensor weights_out;
    if (slot.master.defined()) {
      weights_out = slot.param.device() == home_ && slot.param.is_contiguous()
                        ? slot.param
                        : torch::empty(slot.param.sizes(), slot.param.options().device(home_));
    }
    ++slot.step;
    const AdamWHyper hyper{lr, config_.beta1, config_.beta2, config_.eps, slot.decays ? config_.weight_decay : 0.0};
    const torch::Tensor& master = slot.weights();
    const AdamWTensor tensor{master.data_ptr<float>(),
                             slot.exp_avg.data_ptr(),
                             slot.exp_avg_sq.data_ptr(),
                             grad.data_ptr(),
                             weights_out.defined() ? weights_out.data_ptr() : nullptr,
                             master.numel(),
                             elem_of(slot.exp_avg.scalar_type()),
                             elem_of(grad.scalar_type()),
                             weights_out.defined() ? elem_of(weights_out.scalar_type()) : Elem::kF32};
    cpu_adamw_step(hyper, slot.step, static_cast<float>(grad_scale), tensor, threads_);
    if (weights_out.defined() && !weights_out.is_same(slot.param)) slot.param.copy_(weights_out);
  }
}

void StageOptimizer::step_library(double lr, double grad_scale) {
  for (Slot& slot : slots_) {
    if (!slot.param.grad().defined()) continue;
    if (slot.master.defined()) {
      slot.master.mutable_grad() = slot.param.grad().to(home_, torch::kFloat32);
      if (grad_scale != 1.0) slot.master.mutable_grad().mul_(grad_scale);
    } else if (grad_scale != 1.0) {
      slot.param.mutable_grad().mul_(grad_scale);
    }
  }
  set_lr(*library_, lr);
  library_->step();
  for (Slot& slot : slots_) {
    if (slot.master.defined() && slot.param.grad().defined()) slot.param.copy_(slot.master);
  }
}

std::string StageOptimizer::describe() const {
  std::string text = fused_ ? "fused CPU AdamW" : "LibTorch " + config_.kind.name();
  text += masters_ ? " on float32 masters in " + home_.str() : " in place";
  if (fused_ && config_.state_dtype != Dtype::kFloat32) text += " (" + dtype_name(config_.state_dtype) + " moments)";
  return text;
}

size_t StageOptimizer::index_of(const torch::Tensor& param) const {
  for (size_t i = 0; i < slots_.size(); ++i) {
    if (slots_[i].param.is_same(param)) return i;
  }
  throw std::logic_error("a parameter this stage's optimizer does not hold");
}

torch::Tensor StageOptimizer::weights_of(const torch::Tensor& param) const { return slots_[index_of(param)].weights(); }

std::vector<std::pair<std::string, torch::Tensor>> StageOptimizer::state_of(const torch::Tensor& param) const {
  const Slot& slot = slots_[index_of(param)];
  if (!fused_) return optimizer_impl(config_.kind).state_of(*library_, slot.weights());
  if (slot.step == 0) return {};
  return {{"step", torch::tensor(slot.step, torch::kLong)}, {"exp_avg", slot.exp_avg}, {"exp_avg_sq", slot.exp_avg_sq}};
}

void StageOptimizer::restore(const torch::Tensor& param, const torch::Tensor& weights,
                             const std::vector<std::pair<std::string, torch::Tensor>>& state) {
  torch::NoGradGuard no_grad;
  Slot& slot = slots_[index_of(param)];
  if (!weights.sizes().equals(slot.param.sizes())) {
    throw std::runtime_error("has shape " + c10::str(weights.sizes()) + ", the model's is " + c10::str(slot.param.sizes()));
  }
  if (slot.master.defined()) slot.master.copy_(weights);
  slot.param.copy_(weights);
  if (!fused_) {
    if (state.empty()) {
      library_->state().erase(optimizer_state_key(slot.weights()));
    } else {
      optimizer_impl(config_.kind).set_state(*library_, slot.weights(), state);
    }
    return;
  }
  if (state.empty()) {
    slot.step = 0;
    slot.exp_avg.zero_();
    slot.exp_avg_sq.zero_();
    return;
  }
  slot.step = find_state(state, "step", torch::Tensor()).item<int64_t>();
  slot.exp_avg.copy_(find_state(state, "exp_avg", slot.param));
  slot.exp_avg_sq.copy_(find_state(state, "exp_avg_sq", slot.param));
}

std::vector<std::pair<std::string, torch::Tensor>> named_layer_state(const StageOptimizer& optimizer,
                                                                    const NamedParameters& params) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& [name, param] : params) {
    out.emplace_back("param/" + name, optimizer.weights_of(param).detach());
    for (const auto& [key, tensor] : optimizer.state_of(param)) out.emplace_back("state/" + name + "/" + key, tensor);
  }
  return out;
}

void restore_named_layer_state(StageOptimizer& optimizer, const NamedParameters& params, int64_t layer,
                               const std::vector<std::pair<std::string, torch::Tensor>>& tensors) {
  torch::NoGradGuard no_grad;
  size_t used = 0;
  for (const auto& [param_key, param] : params) {
    const std::string param_name = "param/" + param_key;
    const std::string state_prefix = "state/" + param_key + "/";
    torch::Tensor weights;
    std::vector<std::pair<std::string, torch::Tensor>> state;
    for (const auto& [name, tensor] : tensors) {
      if (name == param_name) {
        weights = tensor;
        ++used;
      } else if (name.rfind(state_prefix, 0) == 0) {
        state.emplace_back(name.substr(state_prefix.size()), tensor);
        ++used;
      }
    }
    if (!weights.defined()) throw std::runtime_error(param_name + " is missing");
    try {
      optimizer.restore(param, weights, state);
    } catch (const std::runtime_error& e) {
      throw std::runtime_error(param_name + " " + e.what());
    }
  }
  if (used != tensors.size()) {
    throw std::runtime_error(std::to_string(tensors.size() - used) + " tensor(s) belong to no parameter of layer " +
                             std::to_string(layer));
  }
}

}  // namespace pipetrain
