// What each device computes in, and what the optimizer keeps: three separate choices.
//
//   compute  per device kind: float32, bfloat16 or float16 (float64 for checks). A GPU of the
//            reference box (Turing) has fast float16 and no fast bfloat16; CPUs compute bfloat16.
//   master   float32 copies of the weights, kept where the optimizer lives, whenever a layer
//            computes in 16 bits (the optimizer steps them; the 16-bit weights are refreshed from
//            them). A layer computing in float32 or float64 is its own master.
//   state    the optimizer's moments (AdamW's two, SGD's momentum): float32 or bfloat16
//            (OptimizerConfig::state_dtype).
// float16's narrow range needs loss scaling: the loss is multiplied by a scale before backward and
// the gradients divided by it before the optimizer; a step whose gradients overflow is skipped and
// the scale halved, and the scale doubles after `growth_interval` clean steps.
//
//   Precision p;  p.cuda = Dtype::kFloat16;  p.loss_scaling = LossScaling::kDynamic;
//   p.compute(DeviceId::cuda(0));   // kFloat16
//   optimizer_method(config, Dtype::kFloat16, ...).masters;   // true (memory/optimizer_config.h)
#pragma once

#include <cstdint>
#include <string>

#include "memory/device.h"
#include "memory/model_config.h"

namespace pipetrain {

enum class LossScaling { kNone, kDynamic };

struct Precision {
  Dtype cpu = Dtype::kFloat32;
  Dtype cuda = Dtype::kFloat32;
  LossScaling loss_scaling = LossScaling::kNone;
  double initial_loss_scale = 65536.0;
  int64_t growth_interval = 2000;  // clean steps before the scale doubles

  Dtype compute(DeviceId device) const;
  bool uses(Dtype dtype) const { return cpu == dtype || cuda == dtype; }
};

// Every device computing in `dtype`; dynamic loss scaling exactly when something computes in float16.
Precision uniform_precision(Dtype dtype);

// What crosses a boundary between stages computing in `sender` and `receiver`: the narrower of the
// two (the receiver's on a tie), so a 16-bit side halves the copies; each side converts its own.
Dtype boundary_dtype(Dtype sender, Dtype receiver);

std::string loss_scaling_name(LossScaling scaling);
// "dynamic" or "none"; InputError naming the value otherwise.
LossScaling parse_loss_scaling(const std::string& name);

}  // namespace pipetrain
