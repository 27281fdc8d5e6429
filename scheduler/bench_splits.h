// What `pipetrain bench` measures, and how it reduces the measurements: pure, so it is tested on
// fake timings.
//
//   std::vector<StageMap> splits = every_split(model, hardware, shapes, /*cap=*/40);
//   StepStats s = summarize_steps({0.9, 0.41, 0.40, 0.42}, /*tokens_per_step=*/4096, /*warmup=*/1);
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "memory/hardware.h"
#include "memory/model_config.h"
#include "memory/stage_map.h"
#include "scheduler/planner.h"  // Shape

namespace pipetrain {

// Every boundary choice of every shape (devices per stage), with each core split and lane split
// the planner considers (scheduler/planner.h core_splits, lane_splits). When there are more than `cap`, an evenly spaced
// subset of `cap` of them, always including the first and the last; `total` says how many there were.
struct SplitList {
  std::vector<StageMap> maps;
  size_t total = 0;
};
SplitList every_split(const ModelConfig& model, const HardwareSpec& hardware, const std::vector<Shape>& shapes,
                      size_t cap);

// The same stages, one op at a time: every CPU stage in the shared pool of all cores, without lanes
// (the naive, unpipelined way of running a split).
StageMap naive_version(const StageMap& map);

// "cpu embed..block 3 | cpu[1c] block 4..head", "cpu(2 lanes) embed..head": a split's label in
// tables and plots.
std::string split_label(const ModelConfig& model, const StageMap& map);

struct StepStats {
  int measured = 0;  // steps after the warm-up ones
  double median_step_seconds = 0.0;
  double median_tokens_per_s = 0.0;
};
// The first `warmup` steps are left out; throws std::invalid_argument when none would remain.
StepStats summarize_steps(const std::vector<double>& step_seconds, int64_t tokens_per_step, int warmup);

}  // namespace pipetrain
