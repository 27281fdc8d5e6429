// Runs a schedule (scheduler/schedule.h) as a oneTBB flow graph over abstract stage callbacks.
//
//            queue ──▶ limiter ──▶ stage 0 ──act──▶ send 0→1 ──▶ stage 1 ──act──▶ ... ──▶ stage S-1
//                        ▲           │   ◀──grad── send 1→0 ◀──     │   ◀──grad──  ...        │
//                        └─(B done)──┘                                                    (loss: F then B)
//
// Each stage is a serial node that runs its own op list strictly in the schedule's order: an op
// starts when its input has arrived (forward k: activation k from the stage before, or from the
// limiter on stage 0; backward k: gradient k from the stage after, or the stage's own forward k on the
// last stage). Each boundary direction is a serial node too (its own resource: a copy engine on a
// GPU machine, a hand-off on the CPU). The limiter admits no more micro-batches into stage 0 than the
// schedule keeps in flight there; every stage also checks its own in-flight count against the
// schedule's (a violation is a logic error, never silently tolerated).
//
// An exception in any callback cancels the graph: the stages finish at most the op they are in,
// start no other, and the first exception is rethrown from run_schedule. A schedule whose op lists
// cannot complete raises std::logic_error instead of hanging.
//
//   std::vector<StageCallbacks> stages = ...;           // forward(k), backward(k) per stage
//   std::vector<BoundaryCallbacks> boundaries = ...;    // send_activation(k), send_gradient(k)
//   ExecutionReport r = run_schedule(make_schedule(ScheduleKind::named("1f1b"), 3, 8), stages, boundaries, {});
//   r.events;  // measured spans, same shape as the simulator's
#pragma once

#include <chrono>

#include <functional>
#include <string>
#include <vector>

#include "scheduler/schedule.h"
#include "scheduler/simulator.h"  // SimEvent, EventKind: measured and simulated timelines share one type

namespace pipetrain {

struct StageCallbacks {
  std::function<void(int micro_batch)> forward;
  std::function<void(int micro_batch)> backward;
  // A layer-major stage (one that streams its weights: stages/streamed_stage.h) sets these
  // instead: its forwards, which its op list must hold M in a row, run as one call once all M
  // inputs are there, and hand on all M outputs after it; its backwards likewise. Its span is
  // recorded with micro-batch -1.
  std::function<void()> forward_block;
  std::function<void()> backward_block;
};

// Between stage b and b+1. An empty callback is a plain hand-off: the message passes, no span is recorded.
struct BoundaryCallbacks {
  std::function<void(int micro_batch)> send_activation;  // b -> b+1
  std::function<void(int micro_batch)> send_gradient;    // b+1 -> b
};

struct ExecutorOptions {
  int max_threads = 0;  // threads the graph may use at once (its task arena); 0 = one per node that may run
  // Stages with the same group number take turns, one op at a time (they share cores, as the
  // simulator's shared resource does); -1 or a missing entry: the stage waits for no one. A span
  // starts when the stage has its turn, so waiting for the group is bubble, not op time.
  std::vector<int> stage_groups;
  // Per stage, its lanes (memory/stage_map.h); missing or 1: one op at a time. A stage with L > 1
  // runs waves: the next run of up to L ops of one kind in its list, once all their inputs are
  // there, at once on L threads (its forward/backward callbacks are then called concurrently, for
  // different micro-batches); their outputs leave when the whole wave is done, and each op's span
  // is the wave's (what the simulator replays: a wave takes its slowest lane's time).
  std::vector<int> stage_lanes;
  std::vector<std::string> stage_resources;     // names for the events; default "stage s"
  std::vector<std::string> forward_resources;   // per boundary; default "send s->s+1"
  std::vector<std::string> backward_resources;  // per boundary; default "send s+1->s"
};

struct ExecutionReport {
  std::vector<SimEvent> events;     // seconds since the run started, in completion order
  std::vector<int> max_in_flight;   // per stage, observed
  double seconds = 0.0;             // wall time of the whole run
  std::chrono::steady_clock::time_point started;  // time 0 of the events
};

// Throws std::invalid_argument when the callback counts do not match the schedule, and rethrows the
// first exception a callback raised.
ExecutionReport run_schedule(const Schedule& schedule, const std::vector<StageCallbacks>& stages,
                             const std::vector<BoundaryCallbacks>& boundaries, const ExecutorOptions& options);

}  // namespace pipetrain
