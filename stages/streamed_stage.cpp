#include "stages/streamed_stage.h"

#include <torch/autograd.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "stages/optim.h"

namespace pipetrain {

double layer_clip_scale(double layer_norm, double max_norm, int64_t layer_params, int64_t model_params) {
  if (max_norm <= 0.0 || model_params <= 0) return 1.0;
  const double share = max_norm * std::sqrt(static_cast<double>(layer_params) / static_cast<double>(model_params));
  return layer_norm > share ? share / layer_norm : 1.0;
}

StreamedStage::StreamedStage(const ModelConfig& model, int64_t first, int64_t last, uint64_t seed,
                             const StreamedStageOptions& options, const WeightStreamFactory& make_stream)
    : first_(first), last_(last), model_(model), options_(options), compute_(to_torch_dtype(options.compute)) {
  if (options.window_layers < 1) {
    throw std::invalid_argument("a streamed stage's window holds at least one layer, got " + std::to_string(options.window_layers));
  }
  // Each layer is built in float32 (so the masters hold the exact initial values), its values kept
  // as the masters, and its module's own storage dropped: it computes on window slots only.
  const ModelConfig built = with_dtype(model, Dtype::kFloat32);
  int64_t largest = 0;
  torch::NoGradGuard no_grad;
  for (int64_t i = first; i <= last; ++i) {
    Layer layer;
    layer.module = build_layer(built, i, seed);
    layer.module->train();
    torch::OrderedDict<std::string, torch::Tensor> masters;
    for (const auto& item : layer.module->named_parameters()) {
      torch::Tensor master = item.value().detach().clone().set_requires_grad(true);
      masters.insert(item.key(), master);
      layer.masters.push_back(master);
      layer.params.push_back(item.value());
      layer.numel += master.numel();
      item.value().set_data(torch::empty({0}, torch::TensorOptions().dtype(compute_)));
    }
    layer.optimizer = std::make_unique<StageOptimizer>(masters, options.optimizer, torch::kCPU, torch::kFloat32, torch::kCPU,
                                                       options.optimizer_threads);
    layer.optimizer->bind();
    largest = std::max(largest, layer.numel);
    layers_.push_back(std::move(layer));
  }
  stream_ = make_stream(options.window_layers, largest, compute_);
  for (Layer& layer : layers_) {
    for (torch::Tensor& p : layer.params) p.set_data(torch::empty({0}, torch::TensorOptions().dtype(compute_).device(stream_->device())));
  }
}

StreamedStage::~StreamedStage() = default;

void StreamedStage::bind(Layer& layer, int slot) {
  const torch::Tensor& window = stream_->slot(slot);
  int64_t offset = 0;
  for (size_t i = 0; i < layer.params.size(); ++i) {
    const torch::Tensor& master = layer.masters[i];
    layer.params[i].set_data(window.narrow(0, offset, master.numel()).view(master.sizes()));
    offset += master.numel();
  }
}

void StreamedStage::unbind(Layer& layer) {
  for (torch::Tensor& p : layer.params) p.set_data(torch::empty({0}, torch::TensorOptions().dtype(compute_).device(stream_->device())));
}

void StreamedStage::visit_layers(const std::vector<size_t>& order, const std::function<void(size_t)>& body) {
  const int window = stream_->slots();
  size_t next_load = 0;
  auto load = [&](size_t v) {
    Layer& layer = layers_[order[v]];
    const int slot = static_cast<int>(v % static_cast<size_t>(window));
    std::vector<torch::Tensor> views;
    int64_t offset = 0;
    for (const torch::Tensor& master : layer.masters) {
      views.push_back(stream_->slot(slot).narrow(0, offset, master.numel()).view(master.sizes()));
      offset += master.numel();
    }
    stream_->load(slot, first_ + static_cast<int64_t>(order[v]), views, layer.masters);
  };
  for (size_t v = 0; v < order.size(); ++v) {
    // Up to window - 1 layers ahead: each into the slot the layer window visits back released.
    for (; next_load < order.size() && next_load < v + static_cast<size_t>(window); ++next_load) load(next_load);
    const int slot = static_cast<int>(v % static_cast<size_t>(window));
    stream_->wait_loaded(slot);
    Layer& layer = layers_[order[v]];
    bind(layer, slot);
    body(order[v]);
    unbind(layer);
    stream_->release(slot);
  }
}

std::vector<torch::Tensor> StreamedStage::forward(const std::vector<torch::Tensor>& inputs) {
  if (is_last()) throw std::logic_error("the last stage's forward is forward_loss");
  wait_for_gradients();  // the last step's layer steps, before their masters are read
  std::vector<torch::Tensor> xs;
  for (const torch::Tensor& x : inputs) xs.push_back(is_first() ? x : x.to(compute_).detach());
  checkpoints_.assign(layers_.size(), std::vector<torch::Tensor>(xs.size()));
  std::vector<size_t> order(layers_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  torch::NoGradGuard no_grad;
  visit_layers(order, [&](size_t i) {
    for (size_t k = 0; k < xs.size(); ++k) {
      checkpoints_[i][k] = xs[k];
      xs[k] = layers_[i].module->forward(xs[k]);
    }
  });
  return xs;
}

std::vector<double> StreamedStage::forward_loss(const std::vector<torch::Tensor>& inputs, const std::vector<torch::Tensor>& targets,
                                                double loss_divisor) {
  if (!is_last()) throw std::logic_error("forward_loss on a stage that does not end in the head");
  wait_for_gradients();
  std::vector<torch::Tensor> xs;
  for (const torch::Tensor& x : inputs) xs.push_back(is_first() ? x : x.to(compute_).detach());
  checkpoints_.assign(layers_.size(), std::vector<torch::Tensor>(xs.size()));
  targets_ = targets;
  loss_divisor_ = loss_divisor;
  std::vector<size_t> order(layers_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::vector<double> losses(xs.size(), 0.0);
  torch::NoGradGuard no_grad;
  visit_layers(order, [&](size_t i) {
    for (size_t k = 0; k < xs.size(); ++k) {
      checkpoints_[i][k] = xs[k];
      xs[k] = layers_[i].module->forward(xs[k]);
      if (i + 1 == layers_.size()) losses[k] = lm_loss(xs[k], targets[k]).item<double>();
    }
  });
  return losses;
}

std::vector<torch::Tensor> StreamedStage::backward(const std::vector<torch::Tensor>& grad_outputs) {
  if (checkpoints_.empty()) throw std::logic_error("streamed backward without its forward");
  non_finite_layers_ = 0;
  consumed_squared_norm_ = 0.0;
  const size_t m = checkpoints_.front().size();
  if (!is_last() && grad_outputs.size() != m) {
    throw std::logic_error("streamed backward got " + std::to_string(grad_outputs.size()) + " gradients for " +
                           std::to_string(m) + " micro-batches");
  }
  std::vector<torch::Tensor> grads = is_last() ? std::vector<torch::Tensor>(m) : grad_outputs;
  std::vector<size_t> order(layers_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = layers_.size() - 1 - i;
  visit_layers(order, [&](size_t i) {
    Layer& layer = layers_[i];
    const int64_t index = first_ + static_cast<int64_t>(i);
    const bool token_ids = index == kEmbedLayer;
    for (size_t k = 0; k < m; ++k) {
      torch::Tensor x = token_ids ? checkpoints_[i][k] : checkpoints_[i][k].detach().requires_grad_(true);
      const torch::Tensor y = layer.module->forward(x);
      if (is_head_layer(model_, index)) {
        (lm_loss(y, targets_[k]) / loss_divisor_).backward();
      } else {
        y.backward(grads[k].to(y.scalar_type()));
      }
      grads[k] = token_ids ? torch::Tensor() : x.grad();
      checkpoints_[i][k] = torch::Tensor();
    }
    send_gradients_out(layer);
  });
  // The last layers' gradients may still be leaving, and their steps running: whatever reads or
  // steps the masters next waits for them (wait_for_gradients); the input gradients go on now.
  checkpoints_.clear();
  targets_.clear();
  return grads;
}

void StreamedStage::wait_for_gradients() const { stream_->wait_idle(); }

// The layer's gradient is final: out to its masters' gradients in RAM (the previous layer's copy
// must have landed first: two layers' gradients at most on the device), and with a layerwise
// update, the layer's step after it, on the copies' worker (the compute thread goes on).
void StreamedStage::send_gradients_out(Layer& layer) {
  stream_->wait_copies_out();
  std::vector<torch::Tensor> host, device;
  for (size_t i = 0; i < layer.params.size(); ++i) {
    torch::Tensor& p = layer.params[i];
    if (!p.grad().defined()) continue;
    torch::Tensor& g = layer.masters[i].mutable_grad();
    if (!g.defined()) g = torch::zeros_like(layer.masters[i]);
    host.push_back(g);
    device.push_back(p.grad());
    p.mutable_grad() = torch::Tensor();  // the copy holds it until it has left
  }
  stream_->copy_out(host, device);
  if (layerwise_) stream_->after_copies([this, &layer] { step_layer(layer); });
}

// On the copies' worker, once the layer's gradient has arrived: its norm, its clip, its step.
void StreamedStage::step_layer(Layer& layer) {
  const double squared = pipetrain::grad_squared_norm(layer.masters);
  consumed_squared_norm_ += squared;
  const double norm = std::sqrt(squared) / layerwise_->loss_scale;
  if (!std::isfinite(norm)) {
    // An overflow (under loss scaling) or a divergence: this layer does not step; the trainer
    // sees it (non_finite_layers) and treats the step as one whose gradients overflowed.
    ++non_finite_layers_;
    layer.optimizer->zero_grad();
    return;
  }
  const double scale = layer_clip_scale(norm, layerwise_->max_norm, layer.numel, layerwise_->model_params);
  layer.optimizer->step(layerwise_->lr, scale / layerwise_->loss_scale);
  layer.optimizer->zero_grad();
}

torch::Tensor StreamedStage::infer(const torch::Tensor& input) {
  wait_for_gradients();
  torch::Tensor x = is_first() ? input : input.to(compute_);
  std::vector<size_t> order(layers_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  torch::NoGradGuard no_grad;
  visit_layers(order, [&](size_t i) { x = layers_[i].module->forward(x); });
  return x;
}

void StreamedStage::clear_checkpoints() {
  checkpoints_.clear();
  targets_.clear();
  stream_->reset();
  for (Layer& layer : layers_) unbind(layer);
}

void StreamedStage::zero_grad() {
  wait_for_gradients();
  consumed_squared_norm_ = 0.0;
  for (Layer& layer : layers_) layer.optimizer->zero_grad();
}

double StreamedStage::grad_squared_norm() const {
  wait_for_gradients();
  double total = consumed_squared_norm_;
  for (const Layer& layer : layers_) total += pipetrain::grad_squared_norm(layer.masters);
  return total;
}

std::vector<torch::Tensor> StreamedStage::gradients() {
  wait_for_gradients();
  std::vector<torch::Tensor> grads;
  for (Layer& layer : layers_) {
    for (torch::Tensor& m : layer.masters) {
      if (!m.grad().defined()) m.mutable_grad() = torch::zeros_like(m);
      grads.push_back(m.grad());
    }
  }
  return grads;
}

void StreamedStage::step(double lr, double grad_scale) {
  wait_for_gradients();
  for (Layer& layer : layers_) layer.optimizer->step(lr, grad_scale);
}

size_t StreamedStage::index_of(int64_t layer) const {
  if (layer < first_ || layer > last_) {
    throw std::logic_error("layer " + std::to_string(layer) + " is not in this stage (" + std::to_string(first_) + ".." +
                           std::to_string(last_) + ")");
  }
  return static_cast<size_t>(layer - first_);
}

// The masters by their parameters' names: what a checkpoint holds (stages/stage_optimizer.h).
NamedParameters StreamedStage::named_masters(const Layer& layer) {
  NamedParameters params;
  const auto names = layer.module->named_parameters();
  for (size_t i = 0; i < layer.masters.size(); ++i) params.emplace_back(names[i].key(), layer.masters[i]);
  return params;
}

std::vector<std::pair<std::string, torch::Tensor>> StreamedStage::layer_state(int64_t index) const {
  wait_for_gradients();
  const Layer& layer = layers_[index_of(index)];
  return named_layer_state(*layer.optimizer, named_masters(layer));
}

void StreamedStage::set_layer_state(int64_t index, const std::vector<std::pair<std::string, torch::Tensor>>& tensors) {
  wait_for_gradients();
  Layer& layer = layers_[index_of(index)];
  restore_named_layer_state(*layer.optimizer, named_masters(layer), index, tensors);
}

std::vector<torch::Tensor> StreamedStage::parameters() const {
  wait_for_gradients();
  std::vector<torch::Tensor> all;
  for (const Layer& layer : layers_) all.insert(all.end(), layer.masters.begin(), layer.masters.end());
  return all;
}

}  // namespace pipetrain
