#include "runtime/train/loss_scaler.h"

#include <algorithm>
#include <cmath>

namespace pipetrain {

namespace {
// The scale never falls below 1 (it would shrink gradients), nor grows past float16's range.
constexpr double kMinScale = 1.0;
constexpr double kMaxScale = 65536.0 * 65536.0;
}  // namespace

LossScaler::LossScaler(const Precision& precision)
    : active_(precision.loss_scaling == LossScaling::kDynamic),
      scale_(active_ ? precision.initial_loss_scale : 1.0),
      growth_interval_(precision.growth_interval) {}

bool LossScaler::step_is_clean(double scaled_norm) {
  taken_ = scale_;
  if (!active_) return true;
  if (!std::isfinite(scaled_norm)) {
    ++skipped_;
    clean_ = 0;
    scale_ = std::max(kMinScale, scale_ / 2.0);
    return false;
  }
  if (++clean_ >= growth_interval_) {
    clean_ = 0;
    scale_ = std::min(kMaxScale, scale_ * 2.0);
  }
  return true;
}

void LossScaler::restore(const State& state) {
  scale_ = state.scale;
  clean_ = state.clean_steps;
  skipped_ = state.skipped;
}

}  // namespace pipetrain
