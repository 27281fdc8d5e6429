#include "runtime/train/lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace pipetrain {

double lr_at_step(double base_lr, double min_lr_ratio, int64_t warmup_steps, int64_t total_steps, int64_t step) {
  if (step < warmup_steps) return base_lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  const double floor = base_lr * min_lr_ratio;
  const int64_t decay_steps = std::max<int64_t>(1, total_steps - warmup_steps);
  const double progress = std::min(1.0, static_cast<double>(step - warmup_steps) / static_cast<double>(decay_steps));
  return floor + (base_lr - floor) * 0.5 * (1.0 + std::cos(M_PI * progress));
}

double lr_at_step(const TrainConfig& t, int64_t step) {
  if (t.lr_continue_step < 0 || step < t.lr_continue_step) {
    return lr_at_step(t.optimizer.lr, t.min_lr_ratio, t.warmup_steps, t.steps, step);
  }
  const double floor = t.optimizer.lr * t.min_lr_ratio;
  const int64_t decay_steps = std::max<int64_t>(1, t.steps - t.lr_continue_step);
  const double progress = std::min(1.0, static_cast<double>(step - t.lr_continue_step) / static_cast<double>(decay_steps));
  return floor + (t.lr_continue_value - floor) * 0.5 * (1.0 + std::cos(M_PI * progress));
}

}  // namespace pipetrain
