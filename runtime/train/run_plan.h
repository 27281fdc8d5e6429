// From a run's config to the plan that executes it, and back to the config that records what ran.
//
//   PlanRequest request = plan_request_for(run, hardware);   // then set request.map, or leave it to --auto
//   PlanOutcome outcome = run_plan(request);
//   PipelineTrainer trainer(run, outcome.plans.front(), hardware, false);
//
//   Plan plan = plan_of_run(run, hardware);   // the run's own stage map (one CPU stage without one)
#pragma once

#include "runtime/config/run_config.h"
#include "scheduler/remedies.h"

namespace pipetrain {

// The planning request a run's config makes: its model, micro-batching, schedule, checkpointing and
// optimizer on `hardware`, with no stage map yet (the caller sets request.map, or leaves it to plan_auto).
PlanRequest plan_request_for(const RunConfig& run, const HardwareSpec& hardware);

// The plan of the run's own stage map (the whole model as one CPU stage when it has none); the map
// is validated against the model and hardware first (InputError naming what is wrong).
Plan plan_of_run(const RunConfig& run, const HardwareSpec& hardware);

// The run's config with the plan's decisions in it (stage map, schedule, micro-batches,
// checkpointing): what a run directory and its checkpoints record, so a resume runs the same plan.
RunConfig recorded_config(const RunConfig& run, const Plan& plan);

}  // namespace pipetrain
