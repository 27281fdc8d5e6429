#include "stages/optim.h"

#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

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
