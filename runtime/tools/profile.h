// pipetrain profile: what each layer of a model costs on this machine, measured.
//
// For the model and micro-batch size of a run, every layer's forward, backward and optimizer step is
// timed (median of `repeats` after `warmup`) on the CPU with each core count a CPU stage may get,
// threaded and pinned as a stage with that many cores would be (scheduler/cores.h): all cores as one
// group (1 intra-op thread, OpenBLAS on every core), fewer as one of several groups (intra-op
// threads = cores, OpenBLAS 1) with the other groups busy: copies of the measurement run side by
// side on the other cores, as the pipeline's stages do, since they share memory bandwidth and caches. The result is this machine's hardware description with the measured
// times attached (HardwareSpec::measured) and its GEMM rates measured; written as YAML it is a
// hardware file that `plan --hardware` and `train --auto --hardware` read, so the planner sums
// measured layer times instead of dividing FLOPs by a rate.
//
// The model is measured in the dtype its `dtype` says: give it the CPU's compute dtype
// (with_dtype(run.model, run.precision.cpu)), as the planner keys the times by it.
//
//   HardwareSpec hw = profile_this_machine(with_dtype(run.model, run.precision.cpu), run.train.micro_batch_size,
//                                          run.train.optimizer, {});
//   write_file_atomically("profile.yaml", hardware_to_yaml(hw));
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "memory/hardware.h"
#include "memory/model_config.h"
#include "memory/optimizer_config.h"

namespace pipetrain {

struct ProfileOptions {
  int repeats = 5;
  int warmup = 2;
  // Whole rounds (every layer, `repeats` times each) are repeated until two in a row agree on the
  // model's total within this fraction, at most max_rounds; the rounds' spread is recorded.
  double stable_within = 0.03;
  int max_rounds = 3;
  std::vector<int> core_counts;  // empty: 1 .. usable cores
  std::function<void(const std::string&)> progress;  // one line per layer measured
};

// One device and core count: per-layer times in seconds.
LayerTimes measure_layer_times(const ModelConfig& model, int64_t micro_batch_size, const OptimizerConfig& optimizer,
                               int cores, int total_cores, const ProfileOptions& options);

// The calibration (memory/hardware.h CpuCalibration): its workload alone on each of `cores`, the
// cores taking turns a repetition at a time, for half of `seconds` (at least three repetitions
// each), then on all of them for the other half. The profile spends kProfileCalibrationSeconds on
// it; a later check (runtime/tools/calibration.h) less.
constexpr double kProfileCalibrationSeconds = 1.2;
CpuCalibration measure_cpu_calibration(int cores, double seconds);

HardwareSpec profile_this_machine(const ModelConfig& model, int64_t micro_batch_size, const OptimizerConfig& optimizer,
                                  const ProfileOptions& options);

}  // namespace pipetrain
