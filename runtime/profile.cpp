#include "runtime/profile.h"

#include <ATen/Parallel.h>
#include <pthread.h>
#include <sched.h>
#include <torch/optim/optimizer.h>
#include <torch/torch.h>

#include <chrono>

#include "memory/errors.h"
#include "memory/machine_probe.h"
#include "runtime/hardware_config.h"
#include "runtime/threads.h"
#include "runtime/trainer.h"
#include "scheduler/cost_model.h"
#include "stages/model.h"
#include "stages/optim.h"

namespace pipetrain {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// Pins the calling thread to the first `cores` CPUs it may use, for as long as it lives.
class PinFirstCores {
 public:
  explicit PinFirstCores(int cores) {
    if (pthread_getaffinity_np(pthread_self(), sizeof(previous_), &previous_) != 0) return;
    cpu_set_t mine;
    CPU_ZERO(&mine);
    int taken = 0;
    for (int c = 0; c < CPU_SETSIZE && taken < cores; ++c) {
      if (CPU_ISSET(c, &previous_)) {
        CPU_SET(c, &mine);
        ++taken;
      }
    }
    pinned_ = pthread_setaffinity_np(pthread_self(), sizeof(mine), &mine) == 0;
  }
  ~PinFirstCores() {
    if (pinned_) pthread_setaffinity_np(pthread_self(), sizeof(previous_), &previous_);
  }
  PinFirstCores(const PinFirstCores&) = delete;
  PinFirstCores& operator=(const PinFirstCores&) = delete;

 private:
  cpu_set_t previous_;
  bool pinned_ = false;
};

}  // namespace

LayerTimes measure_layer_times(const ModelConfig& model, int64_t micro_batch_size, const OptimizerConfig& optimizer,
                               int cores, int total_cores, const ProfileOptions& options) {
  // Threads as a stage with `cores` cores gets them (scheduler/cores.h): the whole CPU is one group;
  // fewer cores are one group of several, and OpenBLAS then has one thread.
  const bool whole_cpu = cores >= total_cores;
  const int previous_threads = at::get_num_threads();
  at::set_num_threads(whole_cpu ? 1 : cores);
  set_blas_threads(whole_cpu ? cores : 1);
  PinFirstCores pin(cores);

  LayerTimes out;
  out.device = "cpu";
  out.cores = cores;
  const int64_t n = model.num_model_layers();
  const int64_t t = model.seq_len;
  torch::manual_seed(0);
  const torch::Tensor tokens = torch::randint(model.vocab_size, {micro_batch_size, t}, torch::kLong);
  const torch::Tensor targets = torch::randint(model.vocab_size, {micro_batch_size, t}, torch::kLong);
  const torch::Tensor hidden = torch::randn({micro_batch_size, t, model.hidden_dim}).to(to_torch_dtype(model.dtype));
  for (int64_t i = 0; i < n; ++i) {
    const std::shared_ptr<LayerImpl> layer = build_layer(model, i, /*seed=*/1234);
    layer->train();
    const auto opt = make_optimizer(layer->named_parameters(), optimizer);
    std::vector<double> forward, backward, step;
    for (int r = 0; r < options.warmup + options.repeats; ++r) {
      opt->zero_grad();
      torch::Tensor x = i == 0 ? tokens : hidden.detach().requires_grad_(true);
      auto start = Clock::now();
      torch::Tensor y = layer->forward(x);
      if (i == n - 1) y = lm_loss(y, targets);  // the last stage's forward ends in the loss
      const double f = seconds_since(start);
      const torch::Tensor grad = i == n - 1 ? torch::Tensor() : torch::randn_like(y);
      start = Clock::now();
      if (i == n - 1) {
        y.backward();
      } else {
        y.backward(grad);
      }
      const double b = seconds_since(start);
      start = Clock::now();
      opt->step();
      const double o = seconds_since(start);
      if (r >= options.warmup) {
        forward.push_back(f);
        backward.push_back(b);
        step.push_back(o);
      }
    }
    out.forward_seconds.push_back(median(forward));
    out.backward_seconds.push_back(median(backward));
    out.optimizer_seconds.push_back(median(step));
    if (options.progress) {
      char line[160];
      std::snprintf(line, sizeof(line), "cpu, %d core%s: %-10s forward %7.3f ms, backward %7.3f ms, optimizer %6.3f ms",
                    cores, cores == 1 ? " " : "s", layer_name(model, i).c_str(), out.forward_seconds.back() * 1e3,
                    out.backward_seconds.back() * 1e3, out.optimizer_seconds.back() * 1e3);
      options.progress(line);
    }
  }
  at::set_num_threads(previous_threads);
  return out;
}

HardwareSpec profile_this_machine(const ModelConfig& model, int64_t micro_batch_size, const OptimizerConfig& optimizer,
                                  const ProfileOptions& options) {
  HardwareSpec hw = probe_this_machine();  // memory, cores, GPUs, measured GEMM rates
  hw.name = "this-machine (profiled)";
  const int total = hw.device("cpu").cores;
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
  apply_threads(choose_threads(0, 0, total));
  validate_hardware(hw);
  return hw;
}

}  // namespace pipetrain
