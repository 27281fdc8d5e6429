// `pipetrain bench` end to end: choose the splits, time them round-robin against the planner's
// predictions and the baselines, print the table and the verdicts, write CSV, JSON and a plot.
//
//   BenchRequest request;  request.run = run;  request.hardware = hw;  request.splits = SplitSelection::kTop;
//   run_bench_session(request);
#pragma once

#include <string>
#include <vector>

#include "memory/hardware.h"
#include "memory/stage_map.h"
#include "runtime/config/run_config.h"
#include "scheduler/schedule.h"

namespace pipetrain {

enum class SplitSelection { kAll, kTop, kMaps };

struct BenchRequest {
  RunConfig run;          // the model and options (its own stage map is ignored: the splits are chosen here)
  HardwareSpec hardware;
  SplitSelection splits = SplitSelection::kTop;
  int top = 5;                // kTop: the planner's best `top`
  size_t max_splits = 40;     // kAll: an evenly spaced subset beyond this many
  std::vector<StageMap> maps; // kMaps: these, placed on devices this build has
  std::vector<ScheduleKind> schedules;  // the first is the planner's; at least one
  std::vector<int> micro_batch_counts;  // the first is the planner's; at least one
  int steps = 3;
  int warmup = 1;
  std::string out_dir = "bench";
};

// Needs CpuAllocCounter installed before any tensor exists. Returns the exit status.
int run_bench_session(const BenchRequest& request);

}  // namespace pipetrain
