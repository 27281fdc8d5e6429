// The reference trainer: the whole model on one device, micro-batches with gradient accumulation.
//
// It is the yardstick the pipeline is checked against, number for number: a step takes
// micro_batch_size * micro_batches windows in data order, micro-batch m gets rows
// [m * micro_batch_size, (m + 1) * micro_batch_size), each micro-batch's loss is divided by
// micro_batches before backward, then the global gradient norm is clipped and the optimizer steps
// with the scheduled learning rate.
//
//   ReferenceTrainer trainer(run, torch::kCPU);
//   RunSummary summary = run_training(trainer, [](const StepRecord& r) { ... });
#pragma once

#include <torch/types.h>

#include <functional>
#include <memory>
#include <vector>

#include "runtime/config/run_config.h"
#include "runtime/data/corpus.h"
#include "runtime/io/metrics.h"
#include "stages/model.h"

namespace torch::optim {
class Optimizer;
}

namespace pipetrain {

// [rows, seq_len + 1] tokens -> inputs [rows, seq_len] and next-token targets [rows, seq_len].
struct TokenBatch {
  torch::Tensor inputs;
  torch::Tensor targets;
};
TokenBatch to_token_batch(const std::vector<int64_t>& tokens, int64_t rows, int64_t seq_len, torch::Device device);

// What run_training drives: the reference trainer, or the pipeline (runtime/pipeline_trainer.h).
class Trainer {
 public:
  virtual ~Trainer() = default;
  // One optimizer step over micro_batches micro-batches; val_loss is left unset.
  virtual StepRecord train_step() = 0;
  // Mean loss over eval_batches held-out batches (no gradients).
  virtual double validation_loss() = 0;
  virtual int64_t steps_done() const = 0;
  virtual const RunConfig& config() const = 0;
  virtual Corpus& corpus() = 0;
};

class ReferenceTrainer : public Trainer {
 public:
  ReferenceTrainer(const RunConfig& run, torch::Device device);
  ~ReferenceTrainer() override;

  StepRecord train_step() override;
  double validation_loss() override;

  int64_t steps_done() const override { return steps_done_; }
  const RunConfig& config() const override { return run_; }
  LayerRange& model() { return model_; }
  Corpus& corpus() override { return corpus_; }

 private:
  RunConfig run_;
  torch::Device device_;
  Corpus corpus_;
  LayerRange model_{nullptr};
  std::vector<torch::Tensor> params_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  int64_t steps_done_ = 0;
};

struct RunSummary {
  int64_t steps = 0;
  double initial_val_loss = 0.0;
  double final_val_loss = 0.0;
  double median_tokens_per_s = 0.0;
  double seconds = 0.0;
  bool stopped = false;  // `stop` said so before the last step
};

// Trains for run.train.steps, validating before the first step, every eval_interval steps and
// after the last; `on_step` sees every record (with val_loss where validation ran).
// `stop`, asked after every step, ends the run early at that step boundary.
RunSummary run_training(Trainer& trainer, const std::function<void(const StepRecord&)>& on_step,
                        const std::function<bool()>& stop = nullptr);

}  // namespace pipetrain
