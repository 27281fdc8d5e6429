#include "stages/optim.h"

#include "stages/optimizers/optimizer_impl.h"
#include "stages/optimizer_list.inc"  // kOptimizerImpls: generated from stages/optimizers/

#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

namespace pipetrain {
bool parameter_decays(const std::string& name, const torch::Tensor& p) {
  if (p.dim() < 2) return false;  // biases and LayerNorm gains
  return name.find("positions") == std::string::npos;
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const torch::OrderedDict<std::string, torch::Tensor>& params,
                                                        const OptimizerConfig& config) {
  std::vector<torch::Tensor> with_decay, without_decay;
  for (const auto& item : params) (parameter_decays(item.key(), item.value()) ? with_decay : without_decay).push_back(item.value());
  return optimizer_impl(config.kind).make(with_decay, without_decay, config);
}

void set_lr(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

double grad_squared_norm(const std::vector<torch::Tensor>& params) {
  torch::NoGradGuard no_grad;
  double total = 0.0;
  for (const torch::Tensor& p : params) {
    if (!p.grad().defined()) continue;
    total += p.grad().to(torch::kFloat64).pow(2).sum().item<double>();
  }
  return total;
}

double clip_scale(double total_norm, double max_norm) {
  if (!std::isfinite(total_norm)) {
    throw std::invalid_argument("clip_scale: the gradient norm is " + std::to_string(total_norm) + ", not a finite number");
  }
  if (max_norm <= 0.0) return 1.0;
  const double scale = max_norm / (total_norm + 1e-6);
  return scale < 1.0 ? scale : 1.0;
}

void scale_grads(const std::vector<torch::Tensor>& params, double scale) {
  if (scale == 1.0) return;
  torch::NoGradGuard no_grad;
  for (const torch::Tensor& p : params) {
    if (p.grad().defined()) p.grad().mul_(scale);
  }
}

std::optional<std::string> first_non_finite_gradient(const LayerRange& layers, const ModelConfig& model) {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < layers->layers().size(); ++i) {
    for (const auto& item : layers->layers()[i]->named_parameters()) {
      const torch::Tensor& g = item.value().grad();
      if (g.defined() && !torch::isfinite(g).all().item<bool>()) {
        return layer_name(model, layers->first() + static_cast<int64_t>(i)) + " (" + item.key() + ")";
      }
    }
  }
  return std::nullopt;
}

}  // namespace pipetrain

namespace pipetrain {

const OptimizerImpl& optimizer_impl(OptimizerKind kind) {
  for (const OptimizerImpl* impl : kOptimizerImpls) {
    if (kind.name() == impl->name) return *impl;
  }
  throw std::logic_error("optimizer '" + kind.name() + "' is registered in memory/ but has no implementation in stages/optimizers/");
}

namespace {

template <typename Key>
Key state_key_as(const torch::Tensor& param) {
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream text;
    text << param.unsafeGetTensorImpl();
    return text.str();
  } else {
    return static_cast<Key>(param.unsafeGetTensorImpl());
  }
}

}  // namespace

OptimizerStateKey optimizer_state_key(const torch::Tensor& param) { return state_key_as<OptimizerStateKey>(param); }

const torch::Tensor& find_state(const NamedTensors& state, const std::string& key, const torch::Tensor& like) {
  for (const auto& [name, tensor] : state) {
    if (name != key) continue;
    if (like.defined() && !tensor.sizes().equals(like.sizes())) {
      throw std::runtime_error("optimizer state '" + key + "' has shape " + c10::str(tensor.sizes()) + ", the parameter " +
                               c10::str(like.sizes()));
    }
    return tensor;
  }
  throw std::runtime_error("optimizer state '" + key + "' is missing");
}

NamedTensors parameter_state(const OptimizerConfig& config, const torch::optim::Optimizer& optimizer,
                             const torch::Tensor& param) {
  return optimizer_impl(config.kind).state_of(optimizer, param);
}

void set_parameter_state(const OptimizerConfig& config, torch::optim::Optimizer& optimizer, const torch::Tensor& param,
                         const NamedTensors& state) {
  if (state.empty()) {
    optimizer.state().erase(optimizer_state_key(param));
    return;
  }
  torch::NoGradGuard no_grad;
  optimizer_impl(config.kind).set_state(optimizer, param, state);
}

}  // namespace pipetrain
