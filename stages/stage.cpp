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
}

Stage::~Stage() = default;

torch::Tensor Stage::prepare_input(const torch::Tensor& input) const {
  // Token ids need no gradient; an activation, in this stage's dtype, becomes a leaf whose gradient
  // is what we send back.
  if (is_first()) return input;
  return input.to(compute_).detach().requires_grad_(true);
}

Stage::Saved Stage::take(int k) {
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
  if (options_.checkpointing) {
    output = forward_keeping_layer_inputs(saved);
  } else {
    saved.output = layers_->forward(saved.input);
    output = saved.output.detach();
  }
  stash_[k] = std::move(saved);
  return output;
}

double Stage::forward_loss(int k, const torch::Tensor& input, const torch::Tensor& targets, double loss_divisor) {
  if (!is_last()) throw std::logic_error("forward_loss on a stage that does not end in the head");
  Saved saved;
  saved.input = prepare_input(input);
  saved.targets = targets;
  saved.loss_divisor = loss_divisor;
  double value = 0.0;
  if (options_.checkpointing) {
    torch::NoGradGuard no_grad;
    value = lm_loss(forward_keeping_layer_inputs(saved), targets).item<double>();
  } else {
    const torch::Tensor loss = lm_loss(layers_->forward(saved.input), targets);
    value = loss.item<double>();
    saved.output = loss / loss_divisor;
  }
  stash_[k] = std::move(saved);
  return value;
}

torch::Tensor Stage::forward_keeping_layer_inputs(Saved& saved) {
  torch::NoGradGuard no_grad;
  torch::Tensor x = saved.input;
  for (const auto& layer : layers_->layers()) {
    saved.layer_inputs.push_back(x.detach());
    x = layer->forward(x);
  }
  return x;
}

torch::Tensor Stage::backward(int k, const torch::Tensor& grad_output) {
  Saved saved = take(k);
  if (!is_last() && !grad_output.defined()) throw std::logic_error("backward of a middle stage without an output gradient");
  if (saved.output.defined()) {
    if (is_last()) saved.output.backward();
    else saved.output.backward(grad_output.to(saved.output.scalar_type()));
    return is_first() ? torch::Tensor() : saved.input.grad();
  }
  // Checkpointing: recompute one layer at a time from its kept input, last layer first, and carry
  // the gradient down; only that layer's activations exist at once.
  const auto& layers = layers_->layers();
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

void Stage::zero_grad() { optimizer_->zero_grad(); }

double Stage::grad_squared_norm() const { return pipetrain::grad_squared_norm(params_); }

std::optional<std::string> Stage::first_non_finite_gradient() const {
  return pipetrain::first_non_finite_gradient(layers_, model_);
}

void Stage::step(double lr, double grad_scale) { optimizer_->step(lr, grad_scale); }

void Stage::clear_stash() { stash_.clear(); }

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
