// Learning rate: linear warm-up, then cosine decay to lr * min_lr_ratio.
//
//   step < warmup:  lr * (step + 1) / warmup
//   otherwise:      min + (lr - min) * (1 + cos(pi * p)) / 2,  p = (step - warmup) / (steps - warmup)
// Steps count from 0; the last step (steps - 1) sits just above the floor.
#pragma once

#include <cstdint>

#include "runtime/config/run_config.h"

namespace pipetrain {

double lr_at_step(double base_lr, double min_lr_ratio, int64_t warmup_steps, int64_t total_steps, int64_t step);

// The run's schedule: the one above, or past train.lr_continue_step (a resume that changed
// train.steps) a cosine from lr_continue_value down to the same floor at train.steps.
double lr_at_step(const TrainConfig& train, int64_t step);

}  // namespace pipetrain
