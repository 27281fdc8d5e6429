// Learning rate: linear warm-up, then cosine decay to lr * min_lr_ratio.
//
//   step < warmup:  lr * (step + 1) / warmup
//   otherwise:      min + (lr - min) * (1 + cos(pi * p)) / 2,  p = (step - warmup) / (steps - warmup)
// Steps count from 0; the last step (steps - 1) sits just above the floor.
#pragma once

#include <cstdint>

namespace pipetrain {

double lr_at_step(double base_lr, double min_lr_ratio, int64_t warmup_steps, int64_t total_steps, int64_t step);

}  // namespace pipetrain
