// Discrete-event replay of a schedule with per-op durations.
//
// Each stage runs its op list (scheduler/schedule.h) strictly in order, exactly as the executor
// does. An op also waits for its input: forward k on stage s for forward k of stage s-1 plus the
// transfer between them; backward k for backward k of stage s+1 (or, on the last stage, its own
// forward k) plus the transfer back. Every op occupies a resource that runs one op at a time:
// a GPU, the CPU's shared pool (stages that share cores queue for it), a CPU stage's own cores,
// or a copy engine (H2D and D2H are separate resources and overlap compute). Among the ops that can
// run, the one that can start first goes first; ties go to the later stage (backward drains first).
// Then the optimizer phase, as the runtime orders it: once every stage's last backward is done,
// each stage's share of the global gradient norm in turn, then each stage's optimizer step in turn
// (no update may start before the norm is known: clipping needs it).
//
//   SimResult r = simulate(make_schedule(ScheduleKind::named("gpipe"), 3, 8), timings, transfers, tokens);
//   r.step_seconds; r.bubble_fraction; r.events;   // the events can be drawn as a trace
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "scheduler/schedule.h"

namespace pipetrain {

struct StageTiming {
  double forward_seconds = 0.0;   // one micro-batch
  double backward_seconds = 0.0;  // one micro-batch (including recomputation with checkpointing)
  double optimizer_seconds = 0.0; // once per step: the stage's optimizer step
  double norm_seconds = 0.0;      // once per step: its share of the global gradient norm
  std::string resource;           // "cpu" (shared pool), "cpu[1]" (own cores), "cuda:0"
};

// Between stage s and s+1. An empty resource means a plain hand-off (same device): no time.
struct TransferTiming {
  double forward_seconds = 0.0;   // activation s -> s+1
  double backward_seconds = 0.0;  // gradient s+1 -> s
  std::string forward_resource;   // e.g. "cpu->cuda:0"
  std::string backward_resource;  // e.g. "cuda:0->cpu"
};

enum class EventKind { kForward, kBackward, kSendActivation, kSendGradient, kOptimizer, kGradNorm };

struct SimEvent {
  EventKind kind;
  int stage;        // the stage that runs it, or for a transfer the stage that sends
  int micro_batch;  // -1 for the optimizer
  std::string resource;
  double start;
  double end;
};

struct SimResult {
  double step_seconds = 0.0;      // until the last optimizer step ends
  double optimizer_phase_seconds = 0.0;  // the gradient norm and the optimizer steps after the pipeline
  double pipeline_seconds = 0.0;  // until the last backward ends
  double tokens_per_s = 0.0;
  double bubble_fraction = 0.0;   // 1 - Σ stage compute / (S * pipeline_seconds)
  std::map<std::string, double> utilisation;  // busy / step_seconds, per resource
  std::string bottleneck;         // the busiest resource
  std::vector<SimEvent> events;   // in start order
};

// transfers has num_stages - 1 entries. Throws std::invalid_argument on mismatched sizes.
SimResult simulate(const Schedule& schedule, const std::vector<StageTiming>& stages,
                   const std::vector<TransferTiming>& transfers, int64_t tokens_per_step);

std::string event_kind_name(EventKind kind);

}  // namespace pipetrain
