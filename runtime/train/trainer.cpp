#include "runtime/train/trainer.h"

#include <torch/optim/optimizer.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "memory/machine_probe.h"
#include "runtime/backends/cpu/host_allocator.h"
#include "runtime/train/lr_schedule.h"
#include "scheduler/statistics.h"
#include "stages/optim.h"

namespace pipetrain {

TokenBatch to_token_batch(const std::vector<int64_t>& tokens, int64_t rows, int64_t seq_len, torch::Device device) {
  torch::Tensor all = torch::from_blob(const_cast<int64_t*>(tokens.data()), {rows, seq_len + 1}, torch::kLong)
                          .to(device, /*non_blocking=*/false, /*copy=*/true);
  return {all.narrow(1, 0, seq_len).contiguous(), all.narrow(1, 1, seq_len).contiguous()};
}

ReferenceTrainer::ReferenceTrainer(const RunConfig& run, torch::Device device)
    : run_(run),
      device_(device),
      corpus_(run.data.files, run.model.seq_len, run.data.val_fraction, static_cast<uint64_t>(run.train.seed),
              corpus_tokenizer(run.data.tokenizer, run.data.files)) {
  model_ = make_gpt_model(run.model, static_cast<uint64_t>(run.train.seed));
  model_->to(device_);
  params_ = model_->parameters();
  optimizer_ = make_optimizer(model_->named_parameters(), run.train.optimizer);
}

ReferenceTrainer::~ReferenceTrainer() = default;

StepRecord ReferenceTrainer::train_step() {
  const TrainConfig& t = run_.train;
  const auto start = std::chrono::steady_clock::now();
  const int64_t rows = t.micro_batch_size * t.micro_batches;
  const TokenBatch batch = to_token_batch(corpus_.next_train_batch(rows), rows, run_.model.seq_len, device_);

  model_->train();
  optimizer_->zero_grad();
  double loss_sum = 0.0;
  for (int64_t m = 0; m < t.micro_batches; ++m) {
    const torch::Tensor inputs = batch.inputs.narrow(0, m * t.micro_batch_size, t.micro_batch_size);
    const torch::Tensor targets = batch.targets.narrow(0, m * t.micro_batch_size, t.micro_batch_size);
    torch::Tensor loss = lm_loss(model_->forward(inputs), targets);
    const double value = loss.item<double>();
    if (!std::isfinite(value)) {
      throw std::runtime_error("loss is " + std::to_string(value) + " at step " + std::to_string(steps_done_ + 1) +
                               ", micro-batch " + std::to_string(m) + " (try a lower train.lr)");
    }
    loss_sum += value;
    (loss / static_cast<double>(t.micro_batches)).backward();
  }

  const double grad_norm = std::sqrt(grad_squared_norm(params_));
  if (!std::isfinite(grad_norm)) {
    // Which micro-batch: each again on its own until one leaves a gradient that is not finite.
    std::string where = "not reproduced when the micro-batches ran again one at a time";
    for (int64_t m = 0; m < t.micro_batches; ++m) {
      optimizer_->zero_grad();
      const torch::Tensor inputs = batch.inputs.narrow(0, m * t.micro_batch_size, t.micro_batch_size);
      const torch::Tensor targets = batch.targets.narrow(0, m * t.micro_batch_size, t.micro_batch_size);
      (lm_loss(model_->forward(inputs), targets) / static_cast<double>(t.micro_batches)).backward();
      if (const auto found = first_non_finite_gradient(model_, run_.model)) {
        where = *found + ", from micro-batch " + std::to_string(m);
        break;
      }
    }
    optimizer_->zero_grad();
    throw std::runtime_error("a gradient is not finite at step " + std::to_string(steps_done_ + 1) + " (global norm " +
                             std::to_string(grad_norm) + "): " + where + "; no optimizer stepped");
  }
  scale_grads(params_, clip_scale(grad_norm, t.grad_clip));
  const double lr = lr_at_step(t, steps_done_);
  set_lr(*optimizer_, lr);
  optimizer_->step();
  ++steps_done_;
  HostCachingAllocator::end_step();

  StepRecord record;
  record.step = steps_done_;
  record.loss = loss_sum / static_cast<double>(t.micro_batches);
  record.lr = lr;
  record.grad_norm = grad_norm;
  record.step_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  record.tokens_per_s = static_cast<double>(rows * run_.model.seq_len) / record.step_seconds;
  record.peak_rss_bytes = peak_rss_bytes();
  return record;
}

double ReferenceTrainer::validation_loss() {
  torch::NoGradGuard no_grad;
  model_->eval();
  const int64_t rows = run_.train.micro_batch_size;
  double total = 0.0;
  for (int64_t k = 0; k < run_.train.eval_batches; ++k) {
    const TokenBatch batch = to_token_batch(corpus_.val_batch(k, rows), rows, run_.model.seq_len, device_);
    total += lm_loss(model_->forward(batch.inputs), batch.targets).item<double>();
  }
  return total / static_cast<double>(run_.train.eval_batches);
}

RunSummary run_training(Trainer& trainer, const std::function<void(const StepRecord&)>& on_step,
                        const std::function<bool()>& stop) {
  const TrainConfig& t = trainer.config().train;
  const auto start = std::chrono::steady_clock::now();
  RunSummary summary;
  summary.initial_val_loss = trainer.validation_loss();
  summary.final_val_loss = summary.initial_val_loss;
  std::vector<double> rates;
  while (trainer.steps_done() < t.steps) {
    StepRecord record = trainer.train_step();
    rates.push_back(record.tokens_per_s);
    if (record.step % t.eval_interval == 0 || record.step == t.steps) {
      record.val_loss = trainer.validation_loss();
      summary.final_val_loss = *record.val_loss;
    }
    if (on_step) on_step(record);
    if (stop && trainer.steps_done() < t.steps && stop()) {
      summary.stopped = true;
      break;
    }
  }
  summary.steps = trainer.steps_done();
  summary.median_tokens_per_s = median(rates);
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

}  // namespace pipetrain
