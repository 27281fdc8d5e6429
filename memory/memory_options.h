// What the memory estimate needs besides the model, the hardware, the stage map and how many
// micro-batches each stage holds (which the schedule decides: scheduler/plan_options.h).
//
// A layer's costs depend on the dtype it computes in (memory/precision.h): describe it with
// with_dtype(model, options.precision.compute(device)).
#pragma once

#include <cstdint>

#include "memory/optimizer_config.h"
#include "memory/precision.h"

namespace pipetrain {

struct MemoryOptions {
  int64_t micro_batch_size = 4;  // sequences per micro-batch
  bool checkpointing = false;    // keep only each layer's input; recompute a layer at a time in backward
  int ring_slots = 2;            // pinned staging buffers per boundary into a device with its own memory
  // Streamed stages (memory/stage_map.h): how many layers' weights the GPU window holds (one
  // computing, the next arriving), and whether each layer's optimizer steps as soon as its gradient
  // is final (then gradients never all exist at once, and clipping acts per layer: a layer of n of
  // the model's N parameters is clipped to grad_clip * sqrt(n / N), so the clipped gradients' global
  // norm never exceeds grad_clip; train.layerwise_update).
  int window_layers = 2;
  bool layerwise_update = false;
  // Copies of the pipeline, each summing its stages' gradients with the others' every step
  // (train.replicas): a stage's host then holds a float32 buffer of its gradients for the sum.
  int replicas = 1;
  OptimizerConfig optimizer;
  Precision precision;           // what each device computes in (the model's dtype is not used here)
};

}  // namespace pipetrain
