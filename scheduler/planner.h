// The planner: evaluates a stage map (memory against budgets, simulated speed), and chooses stage
// boundaries, devices, schedule, micro-batch count, checkpointing and CPU core split automatically.
//
// plan_auto enumerates every candidate (boundaries x shape x options), drops those whose memory
// does not fit, and orders the rest by a lower bound on their step time (the busiest resource's
// total work; one micro-batch's trip forward and back). It simulates candidates in that order and
// stops when the next bound cannot beat the runners-up it already has: the answer is the exact
// optimum of the simulator, found without simulating most candidates (tests check it against brute
// force). Prefix sums make each candidate O(stages).
//
//   PlannerResult r = plan_auto(describe_model(cfg), hardware, options, PlannerChoices{});
//   const Plan& best = r.plans.front();
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "memory/estimate.h"
#include "memory/hardware.h"
#include "memory/model_desc.h"
#include "memory/plan_options.h"
#include "memory/stage_map.h"
#include "scheduler/simulator.h"

namespace pipetrain {

struct Plan {
  StageMap map;
  PlanOptions options;
  MemoryEstimate memory;
  SimResult predicted;
};

// Memory estimate and simulation of one fixed plan (the map must be valid for the model).
Plan evaluate_plan(const ModelDesc& model, const HardwareSpec& hardware, const StageMap& map,
                   const PlanOptions& options);

// What plan_auto may choose. An empty list means "choose among all"; a single entry fixes it.
struct PlannerChoices {
  std::vector<std::vector<std::string>> shapes;  // devices per stage, e.g. {"cpu", "cuda:0", "cpu"}
  std::vector<ScheduleKind> schedules;           // default: gpipe, 1f1b
  std::vector<int> micro_batch_counts;           // default: 1, 2, 4, 8, 16, 32
  std::vector<bool> checkpointing;               // default: off, on
  bool choose_cores = true;                      // try giving CPU stages their own cores
  int runners_up = 3;
};

// The shapes tried when none is given: CPU only, GPU only, and CPU -> GPU -> CPU with its halves.
std::vector<std::vector<std::string>> default_shapes(const HardwareSpec& hardware);

// The core splits plan_auto tries for a shape: all CPU stages sharing the CPU, and (when `choose`
// and there are two or more CPU stages) every split of all its cores among them.
std::vector<std::vector<int>> core_splits(const std::vector<std::string>& shape, const HardwareSpec& hardware,
                                          bool choose);

struct PlannerResult {
  std::vector<Plan> plans;  // best first; empty when nothing fits
  int64_t candidates = 0;   // enumerated
  int64_t feasible = 0;     // fitting every budget
  int64_t simulated = 0;
};

PlannerResult plan_auto(const ModelDesc& model, const HardwareSpec& hardware, const PlanOptions& base,
                        const PlannerChoices& choices);

}  // namespace pipetrain
