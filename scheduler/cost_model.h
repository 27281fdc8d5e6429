// From a model, hardware and stage map to the durations the simulator replays.
//
//   forward  = Σ forward FLOPs per token * tokens / rate,   backward likewise (plus a forward
//              again under activation checkpointing, which recomputes before it differentiates)
//   rate     = the device's sustained FLOP/s; a CPU stage with its own cores gets the rate of that
//              many cores and its own resource "cpu[s]"; CPU stages without cores share "cpu", the pool of
//              the cores no stage owns, at that pool's rate (scheduler/cores.h)
//   transfer = boundary bytes / link bandwidth + latency, on the link's own resource
//              ("cpu->cuda:0" is H2D, "cuda:0->cpu" is D2H); CPU to CPU is a free hand-off.
// A measured profile (pipetrain profile, a later issue) replaces the FLOP-based durations.
#pragma once

#include <vector>

#include "memory/hardware.h"
#include "memory/layer_prefix.h"
#include "memory/plan_options.h"
#include "memory/stage_map.h"
#include "scheduler/simulator.h"

namespace pipetrain {

StageTiming stage_timing(const RangeCosts& range, const ModelConfig& model, const DeviceSpec& device,
                         const std::string& resource, int cores, const PlanOptions& options);

// The resource a stage's compute occupies.
std::string stage_resource(const StageSpec& stage, int index, const HardwareSpec& hardware);

TransferTiming transfer_timing(int64_t boundary_bytes_per_token, const ModelConfig& model, const HardwareSpec& hardware,
                               const std::string& from, const std::string& to, const PlanOptions& options);

std::vector<StageTiming> stage_timings(const LayerPrefix& prefix, const ModelConfig& model, const HardwareSpec& hardware,
                                       const StageMap& map, const PlanOptions& options);
std::vector<TransferTiming> transfer_timings(const LayerPrefix& prefix, const ModelConfig& model,
                                             const HardwareSpec& hardware, const StageMap& map,
                                             const PlanOptions& options);

}  // namespace pipetrain
