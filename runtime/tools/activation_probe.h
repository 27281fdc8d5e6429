// Measures, with the counting allocator, what a forward and backward of the whole model really
// holds on the CPU: the bytes kept from forward to backward for `held` micro-batches (as GPipe
// holds them), and the peak above the starting point while they are differentiated.
#pragma once

#include <cstdint>

#include "memory/model_config.h"

namespace pipetrain {

struct ActivationMeasurement {
  int64_t saved_bytes = 0;  // held after `held` forwards (losses kept, graphs alive)
  int64_t peak_bytes = 0;   // highest point during the forwards and backwards
};

ActivationMeasurement measure_activations(const ModelConfig& model, int64_t micro_batch_size, int held);

// The planner's figure for the same situation: the whole model as one CPU stage holding `held`
// micro-batches (GPipe), allocator slack excluded.
int64_t estimated_activations(const ModelConfig& model, int64_t micro_batch_size, int held);

}  // namespace pipetrain
