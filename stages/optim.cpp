#include "stages/optim.h"

#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

#include <sstream>
#include <string>
#include <type_traits>
#include <utility>

namespace pipetrain {
namespace {

bool decays(const std::string& name, const torch::Tensor& p) {
  if (p.dim() < 2) return false;  // biases and LayerNorm gains
  return name.find("positions") == std::string::npos;
}

}  // namespace

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const torch::OrderedDict<std::string, torch::Tensor>& params,
                                                        const OptimizerConfig& config) {
  std::vector<torch::Tensor> with_decay, without_decay;
  for (const auto& item : params) (decays(item.key(), item.value()) ? with_decay : without_decay).push_back(item.value());

  if (config.kind == OptimizerKind::kAdamW) {
    auto options = [&](double decay) {
      return std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(config.lr)
                                                              .betas({config.beta1, config.beta2})
                                                              .eps(config.eps)
                                                              .weight_decay(decay));
    };
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(with_decay, options(config.weight_decay));
    groups.emplace_back(without_decay, options(0.0));
    return std::make_unique<torch::optim::AdamW>(groups, torch::optim::AdamWOptions(config.lr));
  }
  auto options = [&](double decay) {
    return std::make_unique<torch::optim::SGDOptions>(
        torch::optim::SGDOptions(config.lr).momentum(config.momentum).weight_decay(decay));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(with_decay, options(config.weight_decay));
  groups.emplace_back(without_decay, options(0.0));
  return std::make_unique<torch::optim::SGD>(groups, torch::optim::SGDOptions(config.lr));
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

}  // namespace pipetrain

namespace pipetrain {
namespace {

// LibTorch keys an optimizer's per-parameter state by the parameter's TensorImpl: printed as a
// string before 2.0, the pointer itself since. Either way the key names the same tensor.
using StateKey = std::decay_t<decltype(std::declval<torch::optim::Optimizer&>().state())>::key_type;

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

StateKey state_key(const torch::Tensor& param) { return state_key_as<StateKey>(param); }

const torch::Tensor& find_state(const std::vector<std::pair<std::string, torch::Tensor>>& state, const std::string& key,
                                const torch::Tensor& like) {
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

}  // namespace

std::vector<std::pair<std::string, torch::Tensor>> parameter_state(const torch::optim::Optimizer& optimizer,
                                                                   const torch::Tensor& param) {
  const auto& states = optimizer.state();
  const auto it = states.find(state_key(param));
  if (it == states.end()) return {};
  if (const auto* adamw = dynamic_cast<const torch::optim::AdamWParamState*>(it->second.get())) {
    return {{"step", torch::tensor(adamw->step(), torch::kLong)}, {"exp_avg", adamw->exp_avg()},
            {"exp_avg_sq", adamw->exp_avg_sq()}};
  }
  if (const auto* sgd = dynamic_cast<const torch::optim::SGDParamState*>(it->second.get())) {
    if (!sgd->momentum_buffer().defined()) return {};
    return {{"momentum_buffer", sgd->momentum_buffer()}};
  }
  throw std::runtime_error("parameter_state: an optimizer pipetrain does not make");
}

void set_parameter_state(torch::optim::Optimizer& optimizer, const torch::Tensor& param,
                         const std::vector<std::pair<std::string, torch::Tensor>>& state) {
  const StateKey key = state_key(param);
  if (state.empty()) {
    optimizer.state().erase(key);
    return;
  }
  torch::NoGradGuard no_grad;
  if (dynamic_cast<torch::optim::AdamW*>(&optimizer) != nullptr) {
    auto s = std::make_unique<torch::optim::AdamWParamState>();
    s->step(find_state(state, "step", torch::Tensor()).item<int64_t>());
    s->exp_avg(find_state(state, "exp_avg", param).to(param.options()).clone());
    s->exp_avg_sq(find_state(state, "exp_avg_sq", param).to(param.options()).clone());
    optimizer.state()[key] = std::move(s);
    return;
  }
  auto s = std::make_unique<torch::optim::SGDParamState>();
  s->momentum_buffer(find_state(state, "momentum_buffer", param).to(param.options()).clone());
  optimizer.state()[key] = std::move(s);
}

}  // namespace pipetrain
