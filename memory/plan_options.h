// The choices a plan makes besides the stage boundaries: schedule, micro-batching, activation
// checkpointing, optimizer, staging ring depth.
#pragma once

#include <cstdint>
#include <string>

#include "memory/optimizer_config.h"

namespace pipetrain {

enum class ScheduleKind { kGPipe, kOneFOneB };

// "gpipe" or "1f1b"; throws InputError naming the value otherwise.
ScheduleKind parse_schedule_kind(const std::string& name);
std::string schedule_kind_name(ScheduleKind kind);

// Micro-batches whose activations stage s (of S) holds at once:
// GPipe keeps all M; 1F1B keeps min(M, S - s) (scheduler/schedule.h derives the same from the op lists).
int activations_in_flight(ScheduleKind kind, int num_stages, int stage, int micro_batches);

struct PlanOptions {
  ScheduleKind schedule = ScheduleKind::kOneFOneB;
  int micro_batches = 8;          // M per optimizer step
  int64_t micro_batch_size = 4;   // sequences per micro-batch
  bool checkpointing = false;     // keep only each layer's input; recompute a layer at a time in backward
  int ring_slots = 2;             // pinned staging buffers per cross-device boundary and direction
  OptimizerConfig optimizer;
};

}  // namespace pipetrain
