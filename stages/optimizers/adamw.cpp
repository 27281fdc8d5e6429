// AdamW (Loshchilov & Hutter, 2019) as LibTorch implements it: two FP32 moments per parameter and
// a step count, decoupled weight decay.
#include <torch/optim/adamw.h>

#include "stages/optimizers/optimizer_impl.h"

namespace pipetrain {
namespace {

std::unique_ptr<torch::optim::Optimizer> make(const std::vector<torch::Tensor>& decayed, const std::vector<torch::Tensor>& others,
                                              const OptimizerConfig& config) {
  auto options = [&](double decay) {
    return std::make_unique<torch::optim::AdamWOptions>(
        torch::optim::AdamWOptions(config.lr).betas({config.beta1, config.beta2}).eps(config.eps).weight_decay(decay));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decayed, options(config.weight_decay));
  groups.emplace_back(others, options(0.0));
  return std::make_unique<torch::optim::AdamW>(groups, torch::optim::AdamWOptions(config.lr));
}

NamedTensors state_of(const torch::optim::Optimizer& optimizer, const torch::Tensor& param) {
  const auto& states = optimizer.state();
  const auto it = states.find(optimizer_state_key(param));
  if (it == states.end()) return {};
  const auto& s = dynamic_cast<const torch::optim::AdamWParamState&>(*it->second);
  return {{"step", torch::tensor(s.step(), torch::kLong)}, {"exp_avg", s.exp_avg()}, {"exp_avg_sq", s.exp_avg_sq()}};
}

void set_state(torch::optim::Optimizer& optimizer, const torch::Tensor& param, const NamedTensors& state) {
  auto s = std::make_unique<torch::optim::AdamWParamState>();
  s->step(find_state(state, "step", torch::Tensor()).item<int64_t>());
  s->exp_avg(find_state(state, "exp_avg", param).to(param.options()).clone());
  s->exp_avg_sq(find_state(state, "exp_avg_sq", param).to(param.options()).clone());
  optimizer.state()[optimizer_state_key(param)] = std::move(s);
}

}  // namespace

extern const OptimizerImpl kOptimizer_adamw;  // listed by CMake (stages/CMakeLists.txt)
const OptimizerImpl kOptimizer_adamw = {"adamw", make, state_of, set_state};

}  // namespace pipetrain
