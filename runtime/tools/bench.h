// pipetrain bench: real training steps for a set of splits, against the planner's predictions.
//
// Every case gets its own trainer; all advance one step at a time, round-robin, so a noisy
// neighbour slows them alike. Per case: median step time and tokens/s after the warm-up steps, the
// measured bubble (median over steps), the planner's predicted tokens/s and bubble for the same
// split and options (from the hardware's measured profile when it has one), and memory counted by
// the allocator: the state (weights, gradients, optimizer) the case holds and the peak its steps add.
//
//   std::vector<BenchCase> cases = {...};
//   std::vector<BenchResult> results = run_bench(run, hardware, cases, {/*warmup=*/1, /*steps=*/3});
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "memory/hardware.h"
#include "runtime/config/run_config.h"
#include "scheduler/bench_splits.h"

namespace pipetrain {

enum class BenchKind { kSplit, kReference, kNaive };

struct BenchCase {
  BenchKind kind = BenchKind::kSplit;
  StageMap map;  // empty for the reference trainer
  ScheduleKind schedule = ScheduleKind::named("1f1b");
  int micro_batches = 1;
  bool planner_choice = false;
  std::string label;  // filled by run_bench when empty
};

struct BenchResult {
  BenchCase bench;
  StepStats stats;
  double measured_bubble = 0.0;
  double predicted_tokens_per_s = 0.0;  // 0 for the reference trainer
  double predicted_bubble = 0.0;
  double error = 0.0;                   // predicted / measured tokens/s - 1
  int64_t state_bytes = 0;              // counted: weights, gradients, optimizer state
  int64_t activation_peak_bytes = 0;    // counted: the most a step added on top
  int64_t planned_bytes = 0;            // the planner's weights + gradients + optimizer + activations
};

struct BenchOptions {
  int warmup = 1;
  int steps = 3;
  std::function<void(const std::string&)> progress;
};

std::string bench_kind_name(BenchKind kind);

// Needs CpuAllocCounter installed before any tensor exists (for the memory columns).
std::vector<BenchResult> run_bench(const RunConfig& run, const HardwareSpec& hardware, std::vector<BenchCase> cases,
                                   const BenchOptions& options);

// CSV with a header row, one row per result.
std::string bench_csv(const std::vector<BenchResult>& results);

// A gnuplot script that draws measured against predicted tokens/s per split as PNG, marking the
// planner's choice and the best measured split.
std::string bench_gnuplot_script(const std::vector<BenchResult>& results, const std::string& csv_path,
                                 const std::string& png_path, const std::string& title);

}  // namespace pipetrain
