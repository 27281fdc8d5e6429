// A streamed stage (memory/stage_map.h: `weights: cpu` on a GPU stage): its layers compute on a
// device, while their float32 master weights and optimizer state live in host RAM. It runs
// layer-major (scheduler/schedules/layer_major.cpp): each layer takes all M micro-batches while its
// weights are in the device's window, so the weights cross once forward and once backward per step.
//
//   forward   for each layer: its weights into a window slot (queued window_layers - 1 layers
//             ahead, on the copy engine), then every micro-batch through it; each layer's input is
//             kept per micro-batch (checkpoints), nothing else
//   backward  the layers in reverse, loaded again: each micro-batch's layer is recomputed from its
//             checkpoint and differentiated; once the layer has seen all M its gradient is final
//             and goes out to its masters' gradients in RAM (at most two layers' gradients exist
//             on the device: one accumulating, one leaving)
//   step      every layer's fused CPU AdamW (stages/stage_optimizer.h, one per layer) over its
//             masters; or, with a layerwise update, each layer steps as soon as its gradient has
//             arrived, clipped on its own: to max_norm * sqrt(its parameters / the model's)
//             (layer_clip_scale), so gradients never all exist at once
//
// The copies go through a WeightStream (stages/weight_stream.h): the GPU's copy engine, or the
// CPU stand-in, with the same logic above either way.
//
//   StreamedStage stage(model, 1, 4, seed, options, make_stream);
//   std::vector<torch::Tensor> out = stage.forward(inputs);       // all M micro-batches
//   std::vector<torch::Tensor> grads_in = stage.backward(grads);  // all M
//   stage.step(lr, clip_scale);
#pragma once

#include <torch/types.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "memory/model_config.h"
#include "memory/optimizer_config.h"
#include "stages/model.h"
#include "stages/stage_optimizer.h"
#include "stages/weight_stream.h"

namespace pipetrain {

struct StreamedStageOptions {
  Dtype compute = Dtype::kFloat32;  // what the layers compute in on the device
  int window_layers = 2;            // window slots on the device
  OptimizerConfig optimizer;
  int optimizer_threads = 1;
};

// Makes the stream for a window of `slots` slots of `slot_elements` elements in `compute`.
using WeightStreamFactory = std::function<std::unique_ptr<WeightStream>(int slots, int64_t slot_elements, torch::Dtype compute)>;

// A layerwise update's settings for the coming backward.
struct LayerwiseStep {
  double lr = 0.0;
  double max_norm = 0.0;       // train.grad_clip; 0: no clipping
  double loss_scale = 1.0;     // the gradients carry it; undone before the step
  int64_t model_params = 0;    // N of the whole model, for each layer's share of max_norm
};

// The factor layer l's gradient (norm `layer_norm`, `layer_params` of the model's `model_params`)
// is multiplied by under a layerwise update: min(1, max_norm * sqrt(layer_params / model_params) /
// layer_norm); 1 when max_norm is 0. The shares' squares sum to max_norm², so the clipped
// gradients' global norm never exceeds max_norm.
double layer_clip_scale(double layer_norm, double max_norm, int64_t layer_params, int64_t model_params);

class StreamedStage {
 public:
  StreamedStage(const ModelConfig& model, int64_t first, int64_t last, uint64_t seed, const StreamedStageOptions& options,
                const WeightStreamFactory& make_stream);
  ~StreamedStage();
  StreamedStage(const StreamedStage&) = delete;
  StreamedStage& operator=(const StreamedStage&) = delete;

  bool is_first() const { return first_ == kEmbedLayer; }
  bool is_last() const { return last_ == head_layer(model_); }
  int64_t first() const { return first_; }
  int64_t last() const { return last_; }
  torch::Device device() const { return stream_->device(); }

  // Every micro-batch forward, layer-major (not the last stage): the activations to send on.
  std::vector<torch::Tensor> forward(const std::vector<torch::Tensor>& inputs);
  // On the last stage: each micro-batch's mean loss (unscaled); backward differentiates loss / divisor.
  std::vector<double> forward_loss(const std::vector<torch::Tensor>& inputs, const std::vector<torch::Tensor>& targets,
                                   double loss_divisor);
  // Every micro-batch backward, layers in reverse: dL/d(input) per micro-batch (undefined on the
  // first stage). grad_outputs is empty on the last stage. With a layerwise step set, each layer
  // steps during it, on the copies' worker. It returns once the last layer has computed; its
  // gradients may still be leaving (and steps running): every method below that reads them or the
  // masters waits first (wait_for_gradients).
  std::vector<torch::Tensor> backward(const std::vector<torch::Tensor>& grad_outputs);
  void wait_for_gradients() const;
  void set_layerwise_step(std::optional<LayerwiseStep> step) {
    wait_for_gradients();  // the last backward's steps read the settings they were queued with
    layerwise_ = step;
  }
  bool layerwise() const { return layerwise_.has_value(); }
  // Under a layerwise update: the layers of the last backward whose gradient was not finite (they
  // did not step; the others did).
  int non_finite_layers() const {
    wait_for_gradients();
    return non_finite_layers_;
  }
  // No gradients, no checkpoints: one input through every layer (for validation).
  torch::Tensor infer(const torch::Tensor& input);
  // Drops what a failed step left (checkpoints, targets).
  void clear_checkpoints();

  void zero_grad();
  // Over the masters' gradients, in float64; under a layerwise update, over the gradients the last
  // backward stepped and dropped (so the step's global norm is still reported, and an overflow seen).
  double grad_squared_norm() const;
  // The masters' gradients in RAM, once every layer's has landed (zeros where none has yet): what
  // replicas sum. Not under a layerwise update (its layers stepped already).
  std::vector<torch::Tensor> gradients();
  void step(double lr, double grad_scale = 1.0);

  std::vector<std::pair<std::string, torch::Tensor>> layer_state(int64_t layer) const;
  void set_layer_state(int64_t layer, const std::vector<std::pair<std::string, torch::Tensor>>& tensors);
  std::vector<torch::Tensor> parameters() const;  // the float32 masters, in RAM
  const WeightStream& stream() const { return *stream_; }

 private:
  struct Layer {
    std::shared_ptr<LayerImpl> module;      // computes with its parameters bound to a window slot
    std::vector<torch::Tensor> params;      // the module's parameters (bound, or empty)
    std::vector<torch::Tensor> masters;     // float32, host RAM: what the optimizer steps
    std::unique_ptr<StageOptimizer> optimizer;
    int64_t numel = 0;
  };
  // Visits the layers in `order`, each bound to its slot for body(i); loads run window_layers - 1 ahead.
  void visit_layers(const std::vector<size_t>& order, const std::function<void(size_t)>& body);
  void bind(Layer& layer, int slot);
  void unbind(Layer& layer);
  void send_gradients_out(Layer& layer);
  void step_layer(Layer& layer);
  size_t index_of(int64_t layer) const;  // into layers_; std::logic_error outside the stage
  static NamedParameters named_masters(const Layer& layer);

  int64_t first_, last_;
  ModelConfig model_;
  StreamedStageOptions options_;
  torch::Dtype compute_;
  std::vector<Layer> layers_;
  std::unique_ptr<WeightStream> stream_;
  std::vector<std::vector<torch::Tensor>> checkpoints_;  // [layer][micro-batch]: each layer's input
  std::vector<torch::Tensor> targets_;
  double loss_divisor_ = 1.0;
  std::optional<LayerwiseStep> layerwise_;
  int non_finite_layers_ = 0;
  double consumed_squared_norm_ = 0.0;  // of the gradients a layerwise update stepped and dropped
};

}  // namespace pipetrain
