// The planner: chooses stage boundaries, devices, schedule, micro-batch count, checkpointing and
// CPU core split automatically (scheduler/plan.h evaluates one fixed stage map).
//
// plan_auto enumerates every candidate (boundaries x shape x options), drops those whose memory
// does not fit, and orders the rest by a lower bound on their step time (the busiest resource's
// total work; one micro-batch's trip forward and back). It simulates candidates in that order and
// stops when the next bound cannot beat the runners-up it already has: the answer is the exact
// optimum of the simulator, found without simulating most candidates (tests check it against brute
// force). Prefix sums make each candidate O(stages). Memory is checked with the estimate's own
// rules (memory/estimate.h: estimate_stage, boundary_rings, DeviceTally) and copies are timed with
// the cost model's (scheduler/cost_model.h: copy_link, link_seconds).
//
//   PlannerResult r = plan_auto(describe_model(cfg), hardware, options, PlannerChoices{});
//   const Plan& best = r.plans.front();
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "memory/hardware.h"
#include "memory/model_desc.h"
#include "scheduler/plan.h"
#include "scheduler/plan_options.h"

namespace pipetrain {

// The devices of a plan's stages, in order: {cpu, cuda:0, cpu}.
using Shape = std::vector<DeviceId>;

// What plan_auto may choose. An empty list means "choose among all"; a single entry fixes it.
struct PlannerChoices {
  std::vector<Shape> shapes;
  std::vector<ScheduleKind> schedules;  // default: every registered schedule
  std::vector<int> micro_batch_counts;  // default: 1, 2, 4, 8, 16, 32
  std::vector<bool> checkpointing;      // default: off, on
  // For stages on a device of its own memory (a GPU): its optimizer there, or in CPU RAM (float32
  // master weights and state in RAM, gradients out and weights back each step). Default: both.
  std::vector<bool> optimizer_in_ram;
  // For stages on a GPU: weights resident, or streamed from RAM (memory/stage_map.h; the optimizer
  // then lives in RAM and the schedule is layer-major). Default: both; {true}: GPU stages stream.
  std::vector<bool> weights_streamed;
  // A streamed stage's GPU window, in layers (PlanOptions::window_layers): a deeper one lets loads
  // run further ahead of compute that varies from layer to layer, for a layer's weights more of
  // GPU memory each. Default: 1 to 4 (the smallest of equally fast windows wins: less memory).
  std::vector<int> window_layers;
  bool choose_cores = true;             // try giving CPU stages their own cores
  bool choose_lanes = true;             // try splitting a CPU stage's cores into lanes (memory/stage_map.h)
  int runners_up = 3;
};

// The shapes tried when none is given: CPU only, GPU only, and CPU -> GPU -> CPU with its halves.
std::vector<Shape> default_shapes(const HardwareSpec& hardware);

// The core splits plan_auto tries for a shape: all CPU stages sharing the CPU, and (when `choose`
// and there are two or more CPU stages) every split of all its cores among them.
std::vector<std::vector<int>> core_splits(const Shape& shape, const HardwareSpec& hardware, bool choose);

// The lanes plan_auto (and bench --splits all) tries for a shape and one of its core splits: none,
// and, for a shape's only CPU stage when it has two or more cores, one lane per core (the setting
// measured best: benchmarks/README.md). Explicit stage maps may give any lanes that divide the
// cores. Only the first (all 1) without `choose`.
std::vector<std::vector<int>> lane_splits(const Shape& shape, const std::vector<int>& cores, const HardwareSpec& hardware,
                                          bool choose);

// "cpu,cuda:0,cpu" as a shape; InputError naming a device that is not one.
Shape parse_shape(const std::vector<std::string>& names);

struct PlannerResult {
  std::vector<Plan> plans;  // best first; empty when nothing fits
  int64_t candidates = 0;   // enumerated
  int64_t feasible = 0;     // fitting every budget
  int64_t simulated = 0;
};

PlannerResult plan_auto(const ModelDesc& model, const HardwareSpec& hardware, const PlanOptions& base,
                        const PlannerChoices& choices);

}  // namespace pipetrain
