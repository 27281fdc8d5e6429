#include "memory/plan_options.h"

#include <algorithm>

#include "memory/errors.h"

namespace pipetrain {

ScheduleKind parse_schedule_kind(const std::string& name) {
  if (name == "gpipe") return ScheduleKind::kGPipe;
  if (name == "1f1b") return ScheduleKind::kOneFOneB;
  throw InputError("schedule is '" + name + "'; expected gpipe or 1f1b");
}

std::string schedule_kind_name(ScheduleKind kind) { return kind == ScheduleKind::kGPipe ? "gpipe" : "1f1b"; }

int activations_in_flight(ScheduleKind kind, int num_stages, int stage, int micro_batches) {
  if (kind == ScheduleKind::kGPipe) return micro_batches;
  return std::min(micro_batches, num_stages - stage);
}

}  // namespace pipetrain
