// What `pipetrain plan` prints of a plan (scheduler/plan.h): the memory table, verdicts, predicted
// speed, runners-up and, when nothing fits, need against budget and the remedies; or the same
// object as JSON, with each layer's placement and each boundary's copies and rings besides.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <string>
#include <vector>

#include "runtime/config/run_config.h"
#include "scheduler/remedies.h"

namespace pipetrain {

// Where the predicted op times come from: "measured per-layer times (profile.yaml)", or FLOPs over the
// hardware's rates, saying why a profile's measurements do not apply when there is one.
std::string time_source(const ModelConfig& model, const HardwareSpec& hardware, const PlanOptions& options);
// For a plan over several processes (hosts in its stage map, or replicas): "; network 0.12 GB/s,
// 100 us each way (hardware 'x')", or that the hardware does not describe one (cross-host copies
// and gradient sums then cost nothing in the plan); "" for one process.
std::string network_note(const HardwareSpec& hardware, const Plan& plan);

std::string format_plan_text(const PlanRequest& request, const PlanOutcome& outcome, const std::vector<Remedy>& remedies);
nlohmann::ordered_json plan_to_json(const PlanRequest& request, const PlanOutcome& outcome,
                                    const std::vector<Remedy>& remedies);

}  // namespace pipetrain
