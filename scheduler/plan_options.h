// The choices a plan makes besides the stage boundaries: the schedule and how many micro-batches a
// step is cut into, on top of what the memory estimate needs (micro-batch size, activation
// checkpointing, optimizer, staging ring depth).
#pragma once

#include "memory/memory_options.h"
#include "scheduler/schedule.h"

namespace pipetrain {

struct PlanOptions : MemoryOptions {
  ScheduleKind schedule = ScheduleKind::named("1f1b");
  int micro_batches = 8;  // M per optimizer step
};

}  // namespace pipetrain
