#include "scheduler/schedule.h"

#include <algorithm>
#include <stdexcept>

#include "memory/errors.h"
#include "scheduler/schedule_list.inc"  // kRegisteredSchedules: generated from scheduler/schedules/

namespace pipetrain {

ScheduleKind ScheduleKind::named(const std::string& name) {
  std::string known;
  for (size_t i = 0; i < std::size(kRegisteredSchedules); ++i) {
    if (name == kRegisteredSchedules[i]->name) return ScheduleKind(static_cast<int>(i));
    known += (known.empty() ? "" : ", ") + std::string(kRegisteredSchedules[i]->name);
  }
  throw InputError("schedule is '" + name + "'; expected one of " + known);
}

std::vector<ScheduleKind> ScheduleKind::all() {
  std::vector<ScheduleKind> kinds;
  for (size_t i = 0; i < std::size(kRegisteredSchedules); ++i) kinds.push_back(ScheduleKind(static_cast<int>(i)));
  return kinds;
}

const ScheduleDef& ScheduleKind::def() const { return *kRegisteredSchedules[static_cast<size_t>(index_)]; }

std::vector<int> Schedule::in_flight() const {
  std::vector<int> out;
  for (const auto& ops : stages) out.push_back(max_in_flight(ops));
  return out;
}

Schedule make_schedule(ScheduleKind kind, int num_stages, int num_micro_batches, int group) {
  if (num_stages < 1) throw InputError("a schedule needs at least 1 stage, got " + std::to_string(num_stages));
  if (num_micro_batches < 1) {
    throw InputError("a schedule needs at least 1 micro-batch, got " + std::to_string(num_micro_batches));
  }
  if (group < 1) throw InputError("a schedule's micro-batch group is at least 1, got " + std::to_string(group));
  Schedule schedule{kind, num_stages, num_micro_batches, {}, group};
  const int groups = (num_micro_batches + group - 1) / group;
  for (int s = 0; s < num_stages; ++s) {
    std::vector<Op> ops;
    for (const Op& op : kind.def().stage_ops(s, num_stages, groups)) {
      for (int k = op.micro_batch * group; k < std::min(num_micro_batches, (op.micro_batch + 1) * group); ++k) {
        ops.push_back({op.kind, k});
      }
    }
    schedule.stages.push_back(std::move(ops));
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
