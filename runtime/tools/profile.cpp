#include "runtime/tools/profile.h"

#include <ATen/Parallel.h>
#include <torch/optim/optimizer.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>

#include "memory/errors.h"
#include "memory/machine_probe.h"
#include "runtime/backends/cpu/core_pinning.h"
#include "runtime/config/hardware_file.h"
#include "runtime/tools/hardware_probe.h"
#include "runtime/backends/cpu/threads.h"
#include "runtime/train/trainer.h"
#include "scheduler/cost_model.h"
#include "scheduler/statistics.h"
#include "stages/model.h"
#include "stages/optim.h"
#include "stages/stage_optimizer.h"

namespace pipetrain {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// Lets the copies of a measurement start each repetition together, so they overlap as pipeline
// stages on neighbouring cores do.
class Barrier {
 public:
  explicit Barrier(int parties) : parties_(parties) {}
  void arrive_and_wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    const int generation = generation_;
    if (++waiting_ == parties_) {
      waiting_ = 0;
      ++generation_;
      cv_.notify_all();
      return;
    }
    cv_.wait(lock, [&] { return generation != generation_; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  int parties_;
  int waiting_ = 0;
  int generation_ = 0;
};

struct CopyTimes {
  std::vector<double> forward, backward, optimizer;  // per layer: median over repetitions
};

// One copy of the measurement, on cores [first_core, first_core + cores).
CopyTimes measure_copy(const ModelConfig& model, int64_t micro_batch_size, const OptimizerConfig& optimizer,
                       int first_core, int cores, int intra_op_threads, const ProfileOptions& options, Barrier& barrier) {
  std::vector<int> logical(static_cast<size_t>(cores));
  for (int c = 0; c < cores; ++c) logical[static_cast<size_t>(c)] = first_core + c;
  PinToCores pin(logical);
  at::set_num_threads(intra_op_threads);
  CopyTimes out;
  const int64_t t = model.seq_len;
  torch::manual_seed(static_cast<uint64_t>(first_core));
  const torch::Tensor tokens = torch::randint(model.vocab_size, {micro_batch_size, t}, torch::kLong);
  const torch::Tensor targets = torch::randint(model.vocab_size, {micro_batch_size, t}, torch::kLong);
  const torch::Tensor hidden = torch::randn({micro_batch_size, t, model.hidden_dim}).to(to_torch_dtype(model.dtype));
  for (int64_t i = kEmbedLayer; i <= head_layer(model); ++i) {
    const bool head = is_head_layer(model, i);
    // Built, cast and stepped as a stage on the CPU builds, casts and steps it
    // (stages/stage_optimizer.h): float32 masters when computing in 16 bits, the fused AdamW.
    const torch::Dtype compute = to_torch_dtype(model.dtype);
    const std::shared_ptr<LayerImpl> layer =
        build_layer(with_dtype(model, is_16_bit(model.dtype) ? Dtype::kFloat32 : model.dtype), i, /*seed=*/1234);
    StageOptimizer opt(layer->named_parameters(), optimizer, torch::kCPU, compute, torch::kCPU, cores);
    layer->to(compute);
    opt.bind();
    layer->train();
    std::vector<double> forward, backward, step;
    for (int r = 0; r < options.warmup + options.repeats; ++r) {
      opt.zero_grad();
      torch::Tensor x = i == kEmbedLayer ? tokens : hidden.detach().requires_grad_(true);
      barrier.arrive_and_wait();
      auto start = Clock::now();
      torch::Tensor y = layer->forward(x);
      if (head) y = lm_loss(y, targets);  // the last stage's forward ends in the loss
      const double f = seconds_since(start);
      const torch::Tensor grad = head ? torch::Tensor() : torch::randn_like(y);
      barrier.arrive_and_wait();
      start = Clock::now();
      if (head) {
        y.backward();
      } else {
        y.backward(grad);
      }
      const double b = seconds_since(start);
      start = Clock::now();
      opt.step(optimizer.lr, 1.0);
      const double o = seconds_since(start);
      if (r >= options.warmup) {
        forward.push_back(f);
        backward.push_back(b);
        step.push_back(o);
      }
    }
    out.forward.push_back(median(forward));
    out.backward.push_back(median(backward));
    out.optimizer.push_back(median(step));
  }
  return out;
}

}  // namespace

namespace {

// One round: every layer measured once per copy (the copies side by side), averaged over copies.
// With `alone`, one copy only: the other cores idle.
LayerTimes measure_round(const ModelConfig& model, int64_t micro_batch_size, const OptimizerConfig& optimizer, int cores,
                         int total_cores, const ProfileOptions& options, bool alone = false) {
  // Threads as a stage with `cores` cores gets them (scheduler/cores.h): the whole CPU is one group;
  // fewer cores are one group of several, OpenBLAS then has one thread, and the other groups are
  // busy too: as many copies as fit run side by side on disjoint cores, as pipeline stages do
  // (memory bandwidth and caches are shared), and their times are averaged.
  const bool whole_cpu = cores >= total_cores;
  const int copies = whole_cpu || alone ? 1 : total_cores / cores;
  const int previous_threads = at::get_num_threads();
  set_blas_threads(whole_cpu ? cores : 1);
  Barrier barrier(copies);
  std::vector<CopyTimes> results(static_cast<size_t>(copies));
  std::vector<std::exception_ptr> errors(static_cast<size_t>(copies));
  std::vector<std::thread> threads;
  if (copies == 1) {
    results[0] = measure_copy(model, micro_batch_size, optimizer, 0, cores, whole_cpu ? 1 : cores, options, barrier);
  }
  for (int k = 0; k < copies && copies > 1; ++k) {
    threads.emplace_back([&, k] {
      try {
        results[static_cast<size_t>(k)] =
            measure_copy(model, micro_batch_size, optimizer, k * cores, cores, whole_cpu ? 1 : cores, options, barrier);
      } catch (...) {
        errors[static_cast<size_t>(k)] = std::current_exception();
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (const std::exception_ptr& e : errors) {
    if (e) std::rethrow_exception(e);
  }
  at::set_num_threads(previous_threads);

  LayerTimes out;
  out.device = DeviceId::cpu();
  out.cores = cores;
  const size_t n = static_cast<size_t>(model.num_model_layers());
  for (size_t i = 0; i < n; ++i) {
    double f = 0.0, b = 0.0, o = 0.0;
    for (const CopyTimes& c : results) {
      f += c.forward[i] / copies;
      b += c.backward[i] / copies;
      o += c.optimizer[i] / copies;
    }
    out.forward_seconds.push_back(f);
    out.backward_seconds.push_back(b);
    out.optimizer_seconds.push_back(o);
  }
  return out;
}

double compute_seconds(const LayerTimes& t) {
  double sum = 0.0;
  for (const std::vector<double>* v : {&t.forward_seconds, &t.backward_seconds}) {
    for (double x : *v) sum += x;
  }
  return sum;
}

double total_seconds(const LayerTimes& t) {
  double sum = 0.0;
  for (const std::vector<double>* v : {&t.forward_seconds, &t.backward_seconds, &t.optimizer_seconds}) {
    for (double x : *v) sum += x;
  }
  return sum;
}

}  // namespace

LayerTimes measure_layer_times(const ModelConfig& model, int64_t micro_batch_size, const OptimizerConfig& optimizer,
                               int cores, int total_cores, const ProfileOptions& options) {
  // Rounds until two in a row agree on the whole model's time within options.stable_within (or
  // max_rounds); each layer's time is then its median over the rounds, and the spread of the
  // rounds' totals is recorded with the times.
  std::vector<LayerTimes> rounds;
  std::vector<double> totals;
  for (int r = 0; r < std::max(1, options.max_rounds); ++r) {
    rounds.push_back(measure_round(model, micro_batch_size, optimizer, cores, total_cores, options));
    totals.push_back(total_seconds(rounds.back()));
    if (r >= 1 && std::abs(totals[totals.size() - 1] - totals[totals.size() - 2]) <=
                      options.stable_within * totals[totals.size() - 2]) {
      break;
    }
  }
  LayerTimes out = rounds.front();
  const size_t n = out.forward_seconds.size();
  for (size_t i = 0; i < n; ++i) {
    std::vector<double> f, b, o;
    for (const LayerTimes& t : rounds) {
      f.push_back(t.forward_seconds[i]);
      b.push_back(t.backward_seconds[i]);
      o.push_back(t.optimizer_seconds[i]);
    }
    out.forward_seconds[i] = median(f);
    out.backward_seconds[i] = median(b);
    out.optimizer_seconds[i] = median(o);
  }
  out.spread = (*std::max_element(totals.begin(), totals.end()) - *std::min_element(totals.begin(), totals.end())) /
               median(totals);
  out.rounds = static_cast<int>(rounds.size());
  // Fewer cores than the CPU's were measured beside copies on the others: the same alone, once.
  if (cores < total_cores) {
    const LayerTimes alone = measure_round(model, micro_batch_size, optimizer, cores, total_cores, options, /*alone=*/true);
    out.alone_ratio = std::clamp(compute_seconds(alone) / compute_seconds(out), 0.05, 2.0);
  }
  if (options.progress) {
    const int copies = cores >= total_cores ? 1 : total_cores / cores;
    for (size_t i = 0; i < n; ++i) {
      char line[200];
      std::snprintf(line, sizeof(line), "cpu, %d core%s%s: %-10s forward %7.3f ms, backward %7.3f ms, optimizer %6.3f ms",
                    cores, cores == 1 ? " " : "s", copies > 1 ? (" (x" + std::to_string(copies) + " side by side)").c_str() : "",
                    layer_name(model, static_cast<int64_t>(i)).c_str(), out.forward_seconds[i] * 1e3,
                    out.backward_seconds[i] * 1e3, out.optimizer_seconds[i] * 1e3);
      options.progress(line);
    }
    if (cores < total_cores) {
      char line[200];
      std::snprintf(line, sizeof(line), "cpu, %d core%s alone (the other cores idle): %.2f x the time beside copies", cores,
                    cores == 1 ? "" : "s", out.alone_ratio);
      options.progress(line);
    }
  }
  return out;
}

namespace {

// The calibration's workload: one block of a fixed small model (hidden 192, 6 heads, ff 768, 96
// positions, micro-batch 4: a GEMM-bound and a memory-bound half, as a training step has),
// forward and backward, with the calling thread's pinning and thread counts.
class CalibrationBlock {
 public:
  CalibrationBlock() {
    ModelConfig shape;
    shape.hidden_dim = 192;
    shape.num_heads = 6;
    shape.intermediate_size = 768;
    shape.seq_len = 96;
    shape.num_layers = 1;
    torch::manual_seed(7);
    block_ = build_layer(shape, block_layer(0), /*seed=*/1234);
    block_->train();
    input_ = torch::randn({4, shape.seq_len, shape.hidden_dim});
    grad_ = torch::randn({4, shape.seq_len, shape.hidden_dim});
  }
  // Seconds for one forward and backward.
  double once() {
    block_->zero_grad();
    const auto start = Clock::now();
    block_->forward(input_.detach().requires_grad_(true)).backward(grad_);
    return seconds_since(start);
  }

 private:
  std::shared_ptr<LayerImpl> block_;
  torch::Tensor input_, grad_;
};

}  // namespace

CpuCalibration measure_cpu_calibration(int cores, double seconds) {
  const int previous_threads = at::get_num_threads();
  CalibrationBlock block;
  CpuCalibration out;
  at::set_num_threads(1);
  // One core at a time first: after work on several threads, OpenBLAS's idle threads spin for a
  // while and would take the cores measured next. The cores take turns, one repetition each, so
  // that a passing disturbance is not blamed on one of them; each core's median (at least 3).
  set_blas_threads(1);
  std::vector<std::vector<double>> per_core(static_cast<size_t>(cores));
  const auto start = Clock::now();
  for (int round = 0; round < 4 || seconds_since(start) < seconds / 2; ++round) {
    for (int c = 0; c < cores; ++c) {
      PinToCores pin({c});  // as a one-core stage, alone
      const double t = block.once();
      if (round > 0) per_core[static_cast<size_t>(c)].push_back(t);  // the first of each core warms it
    }
  }
  for (const std::vector<double>& times : per_core) {
    const double mid = median(times);
    out.core_seconds.push_back(mid);
    const auto [fastest, slowest] = std::minmax_element(times.begin(), times.end());
    out.unsteadiness = std::max(out.unsteadiness, (*slowest - *fastest) / mid);
  }
  std::vector<int> all(static_cast<size_t>(cores));
  for (int c = 0; c < cores; ++c) all[static_cast<size_t>(c)] = c;
  {
    PinToCores pin(all);  // as a stage on the whole CPU: one intra-op thread, OpenBLAS on every core
    set_blas_threads(cores);
    block.once();
    std::vector<double> times;
    const auto all_start = Clock::now();
    while (times.size() < 3 || seconds_since(all_start) < seconds / 2) times.push_back(block.once());
    out.all_cores_seconds = median(times);
  }
  at::set_num_threads(previous_threads);
  apply_threads(choose_threads(0, 0, cores));
  return out;
}

HardwareSpec profile_this_machine(const ModelConfig& model, int64_t micro_batch_size, const OptimizerConfig& optimizer,
                                  const ProfileOptions& options) {
  HardwareSpec hw = probe_this_machine();  // memory, cores, GPUs, measured GEMM rates
  hw.name = "this-machine (profiled)";
  const int total = hw.cpu().cores;
  std::vector<int> counts = options.core_counts;
  if (counts.empty()) {
    for (int c = 1; c <= total; ++c) counts.push_back(c);
  }
  hw.measured.model_key = profile_key(model, micro_batch_size);
  for (int cores : counts) {
    if (cores < 1 || cores > total) {
      throw InputError("cannot profile with " + std::to_string(cores) + " cores; this machine has " + std::to_string(total));
    }
    hw.measured.entries.push_back(measure_layer_times(model, micro_batch_size, optimizer, cores, total, options));
  }
  hw.measured.calibration = measure_cpu_calibration(total, kProfileCalibrationSeconds);
  validate_hardware(hw);
  return hw;
}

}  // namespace pipetrain
