// Optimizers and gradient clipping over a set of parameters.
//
// Each pipeline stage owns the optimizer of its own parameters; AdamW and SGD act element by
// element, so per-stage optimizers step exactly as one optimizer over the whole model would.
// Clipping needs the global norm: each stage reports its squared norm, the caller sums them.
//
//   auto opt = make_optimizer(model->named_parameters(), config);
//   double sq = grad_squared_norm(params);                 // per stage
//   double scale = clip_scale(std::sqrt(sq_total), 1.0);   // global
//   scale_grads(params, scale); set_lr(*opt, lr); opt->step();
#pragma once

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "memory/optimizer_config.h"
#include "stages/model.h"

namespace pipetrain {

// Whether a parameter's weights decay: weight matrices (and the token table) do; biases, LayerNorm
// parameters and learned positions do not.
bool parameter_decays(const std::string& name, const torch::Tensor& param);

// The registered kind's optimizer (stages/optimizers/) with two parameter groups, by parameter_decays.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const torch::OrderedDict<std::string, torch::Tensor>& params,
                                                        const OptimizerConfig& config);

void set_lr(torch::optim::Optimizer& optimizer, double lr);

// Σ ||grad||², accumulated in float64 on the host. Parameters without a gradient count as zero.
double grad_squared_norm(const std::vector<torch::Tensor>& params);

// The factor that brings a gradient of norm `total_norm` under `max_norm` (1 when it already is or
// clipping is off, max_norm <= 0). Same rule as torch.nn.utils.clip_grad_norm_. A non-finite norm
// has no such factor: std::invalid_argument (the caller skips the step or reports the gradient).
double clip_scale(double total_norm, double max_norm);

// The first parameter of `layers` (in layer order) whose gradient holds a NaN or an infinity, as
// "block 3 (fc_in.weight)"; nothing when every gradient is finite.
std::optional<std::string> first_non_finite_gradient(const LayerRange& layers, const ModelConfig& model);

void scale_grads(const std::vector<torch::Tensor>& params, double scale);

}  // namespace pipetrain

namespace pipetrain {

// One parameter's optimizer state as named tensors, for checkpoints: AdamW "step" (a 0-dim int64
// tensor), "exp_avg", "exp_avg_sq"; SGD "momentum_buffer". Empty before the parameter's first step.
// `config` is the one the optimizer was made from.
std::vector<std::pair<std::string, torch::Tensor>> parameter_state(const OptimizerConfig& config,
                                                                   const torch::optim::Optimizer& optimizer,
                                                                   const torch::Tensor& param);
// Restores what parameter_state returned (copied into fresh tensors). Throws std::runtime_error
// naming the key when the state does not fit this optimizer or parameter.
void set_parameter_state(const OptimizerConfig& config, torch::optim::Optimizer& optimizer, const torch::Tensor& param,
                         const std::vector<std::pair<std::string, torch::Tensor>>& state);

}  // namespace pipetrain
