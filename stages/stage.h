// A pipeline stage: a contiguous layer range on one device, its optimizer, and the stash of what
// each in-flight micro-batch saved for backward.
//
// forward(k, x) takes the previous stage's activation (tokens on the first stage) and returns the
// activation to send on, without autograd history: stages meet only through tensors, which is what
// lets a transfer move them between devices. The graph from the stage's input to its output stays
// in the stash until backward(k, dL/d(output)) consumes it and returns dL/d(input). The last stage
// ends in the loss (forward_loss), divided by M so that the M micro-batches' gradients add up to
// the mean, exactly as the reference trainer's accumulation does.
//
// With activation checkpointing a micro-batch keeps only each layer's input between forward and
// backward (forward runs without a graph); backward recomputes one layer at a time from its input,
// last layer first, and differentiates it: one extra forward per micro-batch, and only one layer's
// activations exist at once (memory/estimate.h has the formula).
//
// With lanes, forward/forward_loss/backward may be called from several threads at once for
// micro-batches of different lanes. Lane 0 computes with the stage's own layers; lanes 1..L-1 with
// layers that share their weights but keep gradients apart. The sum over micro-batches stays the
// reference's, bit for bit: backwards arrive in ascending micro-batch order in waves of L (micro-batch
// k on lane k mod L), lane 0's gradient accumulates in place, and lane j's is added right after
// micro-batch k - 1's is in (it waits for it), then zeroed.
//
// Its optimizer (stages/stage_optimizer.h) keeps float32 master weights when the stage computes in
// 16 bits or keeps its optimizer apart from its device.
//
//   Stage stage(model, /*first=*/1, /*last=*/4, seed, {torch::kCPU, /*checkpointing=*/false, optimizer});
//   torch::Tensor act = stage.forward(k, input);        // send to the next stage
//   torch::Tensor grad_in = stage.backward(k, grad_out); // send to the previous stage
//   stage.step(lr, clip_scale);                         // after the global norm
#pragma once

#include <torch/types.h>

#include <map>
#include <memory>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "memory/model_config.h"
#include "memory/optimizer_config.h"
#include "stages/model.h"
#include "stages/stage_optimizer.h"

namespace pipetrain {

struct StageOptions {
  torch::Device device = torch::kCPU;
  bool checkpointing = false;
  OptimizerConfig optimizer;
  std::optional<Dtype> compute;               // what the layers compute in; default: the model's dtype
  std::optional<torch::Device> optimizer_home;  // where the optimizer's state lives; default: `device`
  int optimizer_threads = 1;                  // the fused CPU AdamW's threads
  // Micro-batches computed at once (memory/stage_map.h lanes): micro-batch k runs on lane k mod
  // lanes, whose layers share the stage's weights but keep gradients of their own.
  int lanes = 1;
};

class Stage {
 public:
  Stage(const ModelConfig& model, int64_t first, int64_t last, uint64_t seed, const StageOptions& options);
  ~Stage();
  Stage(const Stage&) = delete;
  Stage& operator=(const Stage&) = delete;

  bool is_first() const { return first_ == kEmbedLayer; }  // starts with the embedding: its input is token ids
  bool is_last() const { return last_ == head_layer(model_); }  // ends with the head: its forward ends in the loss
  int64_t first() const { return first_; }
  int64_t last() const { return last_; }
  torch::Device device() const { return options_.device; }
  torch::Dtype compute_dtype() const { return compute_; }

  // Forward of micro-batch k (not the last stage). Returns the activation for the next stage, in
  // the stage's compute dtype (an input in another dtype is converted on arrival; its gradient
  // goes back in the stage's dtype).
  torch::Tensor forward(int k, const torch::Tensor& input);
  // Forward of micro-batch k on the last stage: the mean loss over its tokens (unscaled). Backward
  // will differentiate loss / loss_divisor.
  double forward_loss(int k, const torch::Tensor& input, const torch::Tensor& targets, double loss_divisor);
  // Backward of micro-batch k: grad_output is dL/d(output) (undefined on the last stage). Returns
  // dL/d(input), undefined on the first stage. Parameter gradients accumulate.
  torch::Tensor backward(int k, const torch::Tensor& grad_output);

  // No gradients, no stash: for validation.
  torch::Tensor infer(const torch::Tensor& input);

  void zero_grad();
  int lanes() const { return options_.lanes; }
  double grad_squared_norm() const;  // Σ ||grad||² over this stage's parameters, in float64
  // Where this stage's gradients accumulate, one per parameter (zeros where none has yet): what
  // replicas sum (runtime/train/replica_sums.h).
  std::vector<torch::Tensor> gradients();
  // The first of its parameters whose gradient is not finite: "block 3 (fc_in.weight)".
  std::optional<std::string> first_non_finite_gradient() const;
  // The optimizer's step with every gradient multiplied by `grad_scale` (clipping, a loss scale undone).
  void step(double lr, double grad_scale = 1.0);
  const StageOptimizer& optimizer() const { return *optimizer_; }
  // Drops every stashed micro-batch (after a failed step, so the next starts clean).
  void clear_stash();

  // Layer `layer` (an index of the model's layer list, inside this stage) for a checkpoint: its
  // parameters as "param/<name>" and their optimizer state as "state/<name>/<key>".
  std::vector<std::pair<std::string, torch::Tensor>> layer_state(int64_t layer) const;
  // Restores what layer_state returned, possibly written by a stage of another map; throws
  // std::runtime_error naming the tensor that is missing, extra or of the wrong shape.
  void set_layer_state(int64_t layer, const std::vector<std::pair<std::string, torch::Tensor>>& tensors);

  size_t in_flight() const { return stash_.size(); }
  std::vector<torch::Tensor> parameters() const;
  LayerRange& layers() { return layers_; }

 private:
  struct Saved {
    torch::Tensor input;    // what the stage received (requires grad unless it is the first stage)
    torch::Tensor output;   // with its graph; undefined under checkpointing
    std::vector<torch::Tensor> layer_inputs;  // checkpointing: each layer's input, without a graph
    torch::Tensor targets;  // last stage
    double loss_divisor = 1.0;
  };
  // Layer `layer`'s parameters by name, as its optimizer knows them.
  NamedParameters named_layer_parameters(int64_t layer) const;
  torch::Tensor prepare_input(const torch::Tensor& input) const;
  torch::Tensor forward_keeping_layer_inputs(LayerRange& layers, Saved& saved);
  Saved take(int k);
  void keep(int k, Saved saved);
  // The backward of micro-batch k on its lane's layers, its gradients left where they accumulate.
  torch::Tensor differentiate(int k, const torch::Tensor& grad_output);
  // The layers micro-batch k computes with: lane k mod lanes.
  LayerRange& lane_layers(int k);

  int64_t first_;
  int64_t last_;
  ModelConfig model_;
  StageOptions options_;
  LayerRange layers_{nullptr};
  std::vector<torch::Tensor> params_;
  torch::Dtype compute_;
  std::unique_ptr<StageOptimizer> optimizer_;
  std::map<int, Saved> stash_;
  std::mutex stash_mutex_;  // lanes stash and take at once
  std::vector<LayerRange> other_lanes_;  // lanes 1..L-1: layers whose parameters alias layers_'
  std::vector<std::vector<torch::Tensor>> other_lane_params_;
  std::mutex lane_mutex_;
  std::condition_variable lane_added_;
  int next_to_add_ = 0;  // every micro-batch below it is in the stage's gradients
  bool lane_failed_ = false;  // a lane's backward threw this step: the others stop waiting
};

}  // namespace pipetrain
