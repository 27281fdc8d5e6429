// How stages/ builds and checkpoints one registered optimizer kind. memory/optimizer_config.cpp
// registers the kinds and their state sizes (what the planner needs); each file beside this one
// implements one of them and defines `const OptimizerImpl kOptimizer_<file name>`, which CMake
// lists for optimizer_impl(). Adding an optimizer is its registry entry there and its file here.
#pragma once

#include <torch/optim/optimizer.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "memory/optimizer_config.h"

namespace pipetrain {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

struct OptimizerImpl {
  const char* name;  // the registered kind's name
  // Two parameter groups: `decayed` with the config's weight decay, `others` without.
  std::unique_ptr<torch::optim::Optimizer> (*make)(const std::vector<torch::Tensor>& decayed,
                                                   const std::vector<torch::Tensor>& others, const OptimizerConfig& config);
  // One parameter's state as named tensors (empty before its first step); nullopt-like empty when
  // `optimizer` is not of this kind is a logic error.
  NamedTensors (*state_of)(const torch::optim::Optimizer& optimizer, const torch::Tensor& param);
  // Restores what state_of returned (copied into fresh tensors); std::runtime_error naming the key
  // when the state does not fit.
  void (*set_state)(torch::optim::Optimizer& optimizer, const torch::Tensor& param, const NamedTensors& state);
};

// The implementation of `kind`; std::logic_error when memory/ registers a kind stages/ lacks.
const OptimizerImpl& optimizer_impl(OptimizerKind kind);

// LibTorch keys an optimizer's per-parameter state by the parameter's TensorImpl: printed as a
// string before 2.0, the pointer itself since. Either way the key names the same tensor.
using OptimizerStateKey = std::decay_t<decltype(std::declval<torch::optim::Optimizer&>().state())>::key_type;
OptimizerStateKey optimizer_state_key(const torch::Tensor& param);

// The state tensor named `key`, checked to have `like`'s shape when `like` is defined.
const torch::Tensor& find_state(const NamedTensors& state, const std::string& key, const torch::Tensor& like);

}  // namespace pipetrain
