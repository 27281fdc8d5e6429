#include "stages/stage.h"

#include <torch/autograd.h>

#include <stdexcept>

#include "stages/optim.h"

namespace pipetrain {

Stage::Stage(const ModelConfig& model, int64_t first, int64_t last, uint64_t seed, const StageOptions& options)
    : first_(first), last_(last), model_(model), options_(options),
      compute_(to_torch_dtype(options.compute.value_or(model.dtype))) {
  // Built in float32 when computing in 16 bits, so the masters start from the float32 values.
  const Dtype compute = options.compute.value_or(model.dtype);
  layers_ = LayerRange(with_dtype(model, is_16_bit(compute) ? Dtype::kFloat32 : compute), first, last, seed);
  optimizer_ = std::make_unique<StageOptimizer>(layers_->named_parameters(), options_.optimizer, options_.device, compute_,
                                                options_.optimizer_home.value_or(options_.device), options_.optimizer_threads);
  layers_->to(options_.device, compute_);
  layers_->train();
  params_ = layers_->parameters();
  optimizer_->bind();
  // Each other lane: the same layers, whose parameters share the stage's storage (an update of the
  // stage's weights is theirs) but are leaves of their own, so their gradients stay apart.
  for (int lane = 1; lane < options_.lanes; ++lane) {
    LayerRange copy(with_dtype(model, compute), first, last, seed);
    copy->to(options_.device, compute_);
    copy->train();
    std::vector<torch::Tensor> params = copy->parameters();
    if (params.size() != params_.size()) throw std::logic_error("a lane's layers differ from the stage's");
    for (size_t i = 0; i < params.size(); ++i) params[i].set_data(params_[i]);
    other_lanes_.push_back(copy);
    other_lane_params_.push_back(std::move(params));
  }
}

LayerRange& Stage::lane_layers(int k) {
  const int lane = k % options_.lanes;
  return lane == 0 ? layers_ : other_lanes_[static_cast<size_t>(lane - 1)];
}

void Stage::keep(int k, Saved saved) {
  const std::lock_guard<std::mutex> lock(stash_mutex_);
  stash_[k] = std::move(saved);
}

Stage::~Stage() = default;

torch::Tensor Stage::prepare_input(const torch::Tensor& input) const {
  // Token ids need no gradient; an activation, in this stage's dtype, becomes a leaf whose gradient
  // is what we send back.
  if (is_first()) return input;
  return input.to(compute_).detach().requires_grad_(true);
}

Stage::Saved Stage::take(int k) {
  const std::lock_guard<std::mutex> lock(stash_mutex_);
  auto it = stash_.find(k);
  if (it == stash_.end()) {
    throw std::logic_error("stage " + std::to_string(first_) + ".." + std::to_string(last_) + ": backward of micro-batch " +
                           std::to_string(k) + " without its forward");
  }
  Saved saved = std::move(it->second);
  stash_.erase(it);
  return saved;
}

torch::Tensor Stage::forward(int k, const torch::Tensor& input) {
  if (is_last()) throw std::logic_error("the last stage's forward is forward_loss");
  Saved saved;
  saved.input = prepare_input(input);
  torch::Tensor output;
  LayerRange& layers = lane_layers(k);
  if (options_.checkpointing) {
    output = forward_keeping_layer_inputs(layers, saved);
  } else {
    saved.output = layers->forward(saved.input);
    output = saved.output.detach();
  }
  keep(k, std::move(saved));
  return output;
}

double Stage::forward_loss(int k, const torch::Tensor& input, const torch::Tensor& targets, double loss_divisor) {
  if (!is_last()) throw std::logic_error("forward_loss on a stage that does not end in the head");
  Saved saved;
  saved.input = prepare_input(input);
  saved.targets = targets;
  saved.loss_divisor = loss_divisor;
  double value = 0.0;
  LayerRange& layers = lane_layers(k);
  if (options_.checkpointing) {
    torch::NoGradGuard no_grad;
    value = lm_loss(forward_keeping_layer_inputs(layers, saved), targets).item<double>();
  } else {
    const torch::Tensor loss = lm_loss(layers->forward(saved.input), targets);
    value = loss.item<double>();
    saved.output = loss / loss_divisor;
  }
  keep(k, std::move(saved));
  return value;
}

torch::Tensor Stage::forward_keeping_layer_inputs(LayerRange& layers, Saved& saved) {
  torch::NoGradGuard no_grad;
  torch::Tensor x = saved.input;
  for (const auto& layer : layers->layers()) {
    saved.layer_inputs.push_back(x.detach());
    x = layer->forward(x);
  }
  return x;
}

torch::Tensor Stage::backward(int k, const torch::Tensor& grad_output) {
  if (options_.lanes == 1) return differentiate(k, grad_output);
  const int lane = k % options_.lanes;
  // A lane that fails says so, so that the lanes waiting for its gradient throw instead of waiting
  // for ever (the step is then cancelled: clear_stash, zero_grad).
  const auto fail = [&] {
    {
      const std::lock_guard<std::mutex> lock(lane_mutex_);
      lane_failed_ = true;
    }
    lane_added_.notify_all();
  };
  torch::Tensor grad_input;
  try {
    if (lane == 0) {
      // Lane 0's layers are the stage's: its gradient adds into the sum in place, as the reference
      // trainer's accumulation does, while every earlier micro-batch's is already there.
      const std::lock_guard<std::mutex> lock(lane_mutex_);
      if (next_to_add_ != k) {
        throw std::logic_error("stage " + std::to_string(first_) + ".." + std::to_string(last_) + ": backward of micro-batch " +
                               std::to_string(k) + " on lane 0 while micro-batch " + std::to_string(next_to_add_) +
                               "'s gradient is not summed yet");
      }
    }
    grad_input = differentiate(k, grad_output);
  } catch (...) {
    fail();
    throw;
  }
  std::unique_lock<std::mutex> lock(lane_mutex_);
  lane_added_.wait(lock, [&] { return lane_failed_ || next_to_add_ == k; });
  if (lane_failed_) {
    throw std::runtime_error("the backward of micro-batch " + std::to_string(next_to_add_) + " on another lane failed");
  }
  if (lane > 0) {
    torch::NoGradGuard no_grad;
    std::vector<torch::Tensor>& params = other_lane_params_[static_cast<size_t>(lane - 1)];
    for (size_t i = 0; i < params.size(); ++i) {
      torch::Tensor& lane_grad = params[i].mutable_grad();
      if (!lane_grad.defined()) continue;
      torch::Tensor& grad = params_[i].mutable_grad();
      if (grad.defined()) {
        grad.add_(lane_grad);
      } else {
        grad = lane_grad.clone();
      }
      lane_grad.zero_();
    }
  }
  ++next_to_add_;
  lock.unlock();
  lane_added_.notify_all();
  return grad_input;
}

torch::Tensor Stage::differentiate(int k, const torch::Tensor& grad_output) {
  Saved saved = take(k);
  if (!is_last() && !grad_output.defined()) throw std::logic_error("backward of a middle stage without an output gradient");
  if (saved.output.defined()) {
    if (is_last()) saved.output.backward();
    else saved.output.backward(grad_output.to(saved.output.scalar_type()));
    return is_first() ? torch::Tensor() : saved.input.grad();
  }
  // Checkpointing: recompute one layer at a time from its kept input, last layer first, and carry
  // the gradient down; only that layer's activations exist at once.
  const auto& layers = lane_layers(k)->layers();
  torch::Tensor grad = grad_output;
  for (size_t i = layers.size(); i-- > 0;) {
    const bool token_ids = first_ + static_cast<int64_t>(i) == kEmbedLayer;
    torch::Tensor x = token_ids ? saved.layer_inputs[i] : saved.layer_inputs[i].requires_grad_(true);
    torch::Tensor y = layers[i]->forward(x);
    if (is_head_layer(model_, first_ + static_cast<int64_t>(i))) {
      (lm_loss(y, saved.targets) / saved.loss_divisor).backward();
    } else {
      y.backward(grad.to(y.scalar_type()));
    }
    grad = token_ids ? torch::Tensor() : x.grad();
    saved.layer_inputs[i] = torch::Tensor();
  }
  return grad;
}

torch::Tensor Stage::infer(const torch::Tensor& input) {
  torch::NoGradGuard no_grad;
  return layers_->forward(is_first() ? input : input.to(compute_));
}

void Stage::zero_grad() {
  optimizer_->zero_grad();
  {
    const std::lock_guard<std::mutex> lock(lane_mutex_);
    next_to_add_ = 0;
    lane_failed_ = false;
  }
  torch::NoGradGuard no_grad;
  for (auto& params : other_lane_params_) {
    for (torch::Tensor& p : params) {
      if (p.grad().defined()) p.mutable_grad().zero_();
    }
  }
}

double Stage::grad_squared_norm() const { return pipetrain::grad_squared_norm(params_); }

std::vector<torch::Tensor> Stage::gradients() {
  std::vector<torch::Tensor> grads;
  for (torch::Tensor& p : params_) {
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    grads.push_back(p.grad());
  }
  return grads;
}

std::optional<std::string> Stage::first_non_finite_gradient() const {
  if (auto where = pipetrain::first_non_finite_gradient(layers_, model_)) return where;
  for (const LayerRange& lane : other_lanes_) {
    if (auto where = pipetrain::first_non_finite_gradient(lane, model_)) return where;
  }
  return std::nullopt;
}

void Stage::step(double lr, double grad_scale) { optimizer_->step(lr, grad_scale); }

void Stage::clear_stash() {
  const std::lock_guard<std::mutex> lock(stash_mutex_);
  stash_.clear();
  const std::lock_guard<std::mutex> lanes(lane_mutex_);
  next_to_add_ = 0;
  lane_failed_ = false;
}

std::vector<torch::Tensor> Stage::parameters() const { return params_; }

namespace {

const std::shared_ptr<LayerImpl>& layer_at_index(const LayerRange& layers, int64_t layer) {
  if (layer < layers->first() || layer > layers->last()) {
    throw std::logic_error("layer " + std::to_string(layer) + " is not in this stage (" + std::to_string(layers->first()) +
                           ".." + std::to_string(layers->last()) + ")");
  }
  return layers->layers()[static_cast<size_t>(layer - layers->first())];
}

}  // namespace

NamedParameters Stage::named_layer_parameters(int64_t layer) const {
  NamedParameters params;
  for (const auto& item : layer_at_index(layers_, layer)->named_parameters()) params.emplace_back(item.key(), item.value());
  return params;
}

std::vector<std::pair<std::string, torch::Tensor>> Stage::layer_state(int64_t layer) const {
  return named_layer_state(*optimizer_, named_layer_parameters(layer));
}

void Stage::set_layer_state(int64_t layer, const std::vector<std::pair<std::string, torch::Tensor>>& tensors) {
  restore_named_layer_state(*optimizer_, named_layer_parameters(layer), layer, tensors);
}

}  // namespace pipetrain
