#include "scheduler/schedule.h"

#include <algorithm>
#include <stdexcept>

#include "memory/errors.h"

namespace pipetrain {

namespace {

std::vector<Op> gpipe_stage(int m) {
  std::vector<Op> ops;
  for (int k = 0; k < m; ++k) ops.push_back({OpKind::kForward, k});
  for (int k = 0; k < m; ++k) ops.push_back({OpKind::kBackward, k});
  return ops;
}

// PipeDream-flush: stage s runs S-s-1 warm-up forwards, then one forward and one backward in turn,
// then the remaining backwards.
std::vector<Op> one_f_one_b_stage(int s, int num_stages, int m) {
  const int warmup = std::min(num_stages - s - 1, m);
  std::vector<Op> ops;
  int next_forward = 0;
  int next_backward = 0;
  for (; next_forward < warmup; ++next_forward) ops.push_back({OpKind::kForward, next_forward});
  while (next_forward < m) {
    ops.push_back({OpKind::kForward, next_forward++});
    ops.push_back({OpKind::kBackward, next_backward++});
  }
  while (next_backward < m) ops.push_back({OpKind::kBackward, next_backward++});
  return ops;
}

}  // namespace

Schedule make_schedule(ScheduleKind kind, int num_stages, int num_micro_batches) {
  if (num_stages < 1) throw InputError("a schedule needs at least 1 stage, got " + std::to_string(num_stages));
  if (num_micro_batches < 1) {
    throw InputError("a schedule needs at least 1 micro-batch, got " + std::to_string(num_micro_batches));
  }
  Schedule schedule{kind, num_stages, num_micro_batches, {}};
  for (int s = 0; s < num_stages; ++s) {
    schedule.stages.push_back(kind == ScheduleKind::kGPipe ? gpipe_stage(num_micro_batches)
                                                           : one_f_one_b_stage(s, num_stages, num_micro_batches));
  }
  return schedule;
}

int max_in_flight(const std::vector<Op>& ops) {
  int live = 0;
  int most = 0;
  for (const Op& op : ops) {
    live += op.kind == OpKind::kForward ? 1 : -1;
    most = std::max(most, live);
  }
  return most;
}

std::string format_ops(const std::vector<Op>& ops) {
  std::string text;
  for (const Op& op : ops) {
    if (!text.empty()) text += ' ';
    text += (op.kind == OpKind::kForward ? 'F' : 'B') + std::to_string(op.micro_batch);
  }
  return text;
}

}  // namespace pipetrain
