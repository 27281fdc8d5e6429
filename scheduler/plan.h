// A plan: everything decided about how a step runs, in one object. The planner makes it (or
// evaluates a given stage map into it); the trainer executes it and builds nothing the plan has
// decided; `pipetrain plan` prints the same object as a table or as JSON.
//
//   Plan plan = evaluate_plan(describe_model(model), hardware, map, options);
//   plan.layers[i];          // where layer i computes, and where its weights and optimizer state live
//   plan.options.precision;  // what each device computes in
//   plan.schedule.stages[s]; // the op list stage s runs (and the simulator replayed)
//   plan.boundaries[b];      // what crosses boundary b, over which link, through how many pinned slots
//   plan.memory;             // bytes per stage and device, against the budgets
//   plan.predicted;          // the simulated step
#pragma once

#include <vector>

#include "memory/estimate.h"
#include "memory/hardware.h"
#include "memory/model_desc.h"
#include "memory/stage_map.h"
#include "scheduler/cores.h"
#include "scheduler/plan_options.h"
#include "scheduler/schedule.h"
#include "scheduler/simulator.h"

namespace pipetrain {

// Boundary b, between stage b and stage b + 1.
struct BoundaryPlan {
  DeviceId from;               // stage b's device (activations go from -> to, gradients back)
  DeviceId to;                 // stage b + 1's device
  Dtype dtype;                 // what crosses (memory/precision.h boundary_dtype)
  int64_t activation_bytes;    // one micro-batch's boundary activation; its gradient is as large
  BoundaryRings rings;         // pinned staging slots each way, counted in memory (memory/estimate.h)
  TransferTiming predicted;    // copy times and engines; no resource for a hand-off
};

struct Plan {
  StageMap map;                          // the stage grouping: layers, device and cores per stage
  std::vector<Placement> layers;         // per layer of the layer list
  PlanOptions options;
  Schedule schedule;                     // per stage, the ops in order
  CoreAssignment cores;                  // which cores each CPU stage computes on
  std::vector<BoundaryPlan> boundaries;  // num_stages - 1 of them
  MemoryEstimate memory;
  std::vector<StageTiming> stage_times;  // predicted op times per stage, as the simulator replayed them
  SimResult predicted;
};

// The plan of a fixed stage map (it must be valid for the model and hardware: validate_stage_map).
Plan evaluate_plan(const ModelDesc& model, const HardwareSpec& hardware, const StageMap& map, const PlanOptions& options);

// The largest share of its budget any device (or the pinned pool) needs: how close the plan runs
// to running out of memory.
double peak_memory_share(const Plan& plan);

// The order plans are offered in: faster first (time per micro-batch, equal within 1e-12
// relative); among equally fast plans, the one with the lower peak memory share (so 1F1B, which
// holds fewer micro-batches, wins a tie against GPipe on the same split), then the one with fewer
// stages.
bool better_plan(const Plan& a, const Plan& b);

// Tokens one optimizer step processes, over every replica (each computes its share at once).
int64_t tokens_per_step(const ModelConfig& model, const PlanOptions& options);

}  // namespace pipetrain
