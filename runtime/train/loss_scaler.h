// Dynamic loss scaling, for float16's narrow range: the loss is multiplied by the scale before
// backward, so small gradients stay representable, and the gradients divided by it before the
// optimizer. A step whose gradients overflowed (a NaN or an infinity anywhere) is skipped and the
// scale halved; after `growth_interval` clean steps in a row the scale doubles. Without loss
// scaling the scale is 1 and a non-finite gradient is an error, never a skip.
//
//   LossScaler scaler(run.precision);
//   backward of loss * scaler.scale() ...
//   if (scaler.step_is_clean(scaled_norm)) optimizer.step(lr, clip / scaler.scale_before());
#pragma once

#include <cstdint>

#include "memory/precision.h"

namespace pipetrain {

class LossScaler {
 public:
  explicit LossScaler(const Precision& precision);

  bool active() const { return active_; }
  // What the loss is multiplied by for the step being taken.
  double scale() const { return scale_; }
  int64_t skipped_steps() const { return skipped_; }

  // After a step's backward, with the scaled gradients' global norm: true when it is finite (the
  // step goes on, divided by the scale it was taken with: `taken_scale`); false when it is not and
  // scaling is active (the step is skipped, the scale halved). The scale grows after enough clean
  // steps. Without scaling, always true: the caller refuses a non-finite norm itself.
  bool step_is_clean(double scaled_norm);
  double taken_scale() const { return taken_; }

  // For checkpoints: the whole state, restored exactly.
  struct State {
    double scale = 1.0;
    int64_t clean_steps = 0;
    int64_t skipped = 0;
  };
  State state() const { return {scale_, clean_, skipped_}; }
  void restore(const State& state);

 private:
  bool active_;
  double scale_;
  double taken_ = 1.0;
  int64_t growth_interval_;
  int64_t clean_ = 0;
  int64_t skipped_ = 0;
};

}  // namespace pipetrain
