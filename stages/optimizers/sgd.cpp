// SGD as LibTorch implements it: a momentum buffer per parameter when momentum > 0, none otherwise.
#include <torch/optim/sgd.h>

#include "stages/optimizers/optimizer_impl.h"

namespace pipetrain {
namespace {

std::unique_ptr<torch::optim::Optimizer> make(const std::vector<torch::Tensor>& decayed, const std::vector<torch::Tensor>& others,
                                              const OptimizerConfig& config) {
  auto options = [&](double decay) {
    return std::make_unique<torch::optim::SGDOptions>(
        torch::optim::SGDOptions(config.lr).momentum(config.momentum).weight_decay(decay));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decayed, options(config.weight_decay));
  groups.emplace_back(others, options(0.0));
  return std::make_unique<torch::optim::SGD>(groups, torch::optim::SGDOptions(config.lr));
}

NamedTensors state_of(const torch::optim::Optimizer& optimizer, const torch::Tensor& param) {
  const auto& states = optimizer.state();
  const auto it = states.find(optimizer_state_key(param));
  if (it == states.end()) return {};
  const auto& s = dynamic_cast<const torch::optim::SGDParamState&>(*it->second);
  if (!s.momentum_buffer().defined()) return {};
  return {{"momentum_buffer", s.momentum_buffer()}};
}

void set_state(torch::optim::Optimizer& optimizer, const torch::Tensor& param, const NamedTensors& state) {
  auto s = std::make_unique<torch::optim::SGDParamState>();
  s->momentum_buffer(find_state(state, "momentum_buffer", param).to(param.options()).clone());
  optimizer.state()[optimizer_state_key(param)] = std::move(s);
}

}  // namespace

extern const OptimizerImpl kOptimizer_sgd;  // listed by CMake (stages/CMakeLists.txt)
const OptimizerImpl kOptimizer_sgd = {"sgd", make, state_of, set_state};

}  // namespace pipetrain
