// A planning request end to end, and what to change when it does not fit.
//
// run_plan evaluates a fixed stage map, or searches (plan_auto) when none is given. When nothing
// fits it also finds the closest plan (the smallest worst need/budget ratio), so the message can
// state need against budget per device. suggest_remedies re-plans the request with one change at a
// time (an optimizer with less state, checkpointing, a schedule that holds fewer micro-batches,
// bfloat16, smaller micro-batches, the planner's own split, fewer layers) and reports each with the
// numbers the same estimator gives: nothing guessed.
//
//   PlanOutcome out = run_plan(request);
//   if (!out.fits) for (const Remedy& r : suggest_remedies(request, out)) puts(r.description.c_str());
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "scheduler/planner.h"

namespace pipetrain {

struct PlanRequest {
  ModelConfig model;
  HardwareSpec hardware;
  PlanOptions options;             // used as given with a fixed map; the base of the search otherwise
  std::optional<StageMap> map;     // none: plan_auto
  PlannerChoices choices;          // what plan_auto may vary
};

struct PlanOutcome {
  bool fits = false;
  std::vector<Plan> plans;  // fits: best first (one for a fixed map); otherwise the closest plan alone
  int64_t candidates = 0;
  int64_t simulated = 0;
};

PlanOutcome run_plan(const PlanRequest& request);

struct Remedy {
  std::string change;       // "SGD instead of AdamW"
  std::string description;  // the change with its numbers and verdict
  bool fits = false;
  PlanRequest request;      // the request with the change applied
  PlanOutcome outcome;
};

std::vector<Remedy> suggest_remedies(const PlanRequest& request, const PlanOutcome& failed);

// Σ need over devices of a plan, and the largest need / budget ratio.
int64_t total_need_bytes(const MemoryEstimate& estimate);
double worst_ratio(const MemoryEstimate& estimate);

}  // namespace pipetrain
