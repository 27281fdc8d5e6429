// What the memory estimate needs besides the model, the hardware, the stage map and how many
// micro-batches each stage holds (which the schedule decides: scheduler/plan_options.h).
#pragma once

#include <cstdint>

#include "memory/optimizer_config.h"

namespace pipetrain {

struct MemoryOptions {
  int64_t micro_batch_size = 4;  // sequences per micro-batch
  bool checkpointing = false;    // keep only each layer's input; recompute a layer at a time in backward
  int ring_slots = 2;            // pinned staging buffers per boundary into a device with its own memory
  OptimizerConfig optimizer;
};

}  // namespace pipetrain
