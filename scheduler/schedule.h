// Pipeline schedules as data: per stage, the ordered list of (forward | backward, micro-batch).
//
// The executor runs this list and the simulator replays it with costs, so both see one truth.
// For S = 3 stages and M = 4 micro-batches (F = forward, B = backward, number = micro-batch):
//
//   GPipe (fill, then drain)          1F1B (warm up S-s-1 forwards, then alternate)
//   s0: F0 F1 F2 F3 B0 B1 B2 B3       s0: F0 F1 F2 B0 F3 B1 B2 B3
//   s1: F0 F1 F2 F3 B0 B1 B2 B3       s1: F0 F1 B0 F2 B1 F3 B2 B3
//   s2: F0 F1 F2 F3 B0 B1 B2 B3       s2: F0 B0 F1 B1 F2 B2 F3 B3
//
// GPipe keeps all M micro-batches' activations alive on every stage; 1F1B keeps min(M, S - s).
//
//   Schedule plan = make_schedule(ScheduleKind::kOneFOneB, 3, 4);
//   for (const Op& op : plan.stages[1]) run(op);
#pragma once

#include <string>
#include <vector>

#include "memory/plan_options.h"  // ScheduleKind

namespace pipetrain {

enum class OpKind { kForward, kBackward };

struct Op {
  OpKind kind;
  int micro_batch;
  bool operator==(const Op& other) const { return kind == other.kind && micro_batch == other.micro_batch; }
};

struct Schedule {
  ScheduleKind kind;
  int num_stages;
  int num_micro_batches;
  std::vector<std::vector<Op>> stages;  // stages[s] = ordered ops of stage s
};

// Throws InputError when num_stages or num_micro_batches is below 1.
Schedule make_schedule(ScheduleKind kind, int num_stages, int num_micro_batches);

// Most micro-batches whose forward ran and whose backward has not, over the op list.
int max_in_flight(const std::vector<Op>& ops);

// "F0 F1 B0 B1": the notation of the tables above, for tests and traces.
std::string format_ops(const std::vector<Op>& ops);

}  // namespace pipetrain
