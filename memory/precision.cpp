#include "memory/precision.h"

#include "memory/errors.h"

namespace pipetrain {

Dtype Precision::compute(DeviceId device) const {
  switch (device.kind) {
    case DeviceKind::kCpu: return cpu;
    case DeviceKind::kCuda: return cuda;
    case DeviceKind::kStandIn: return cuda;  // it stands in for a GPU
  }
  throw std::logic_error("unknown DeviceKind");
}

Precision uniform_precision(Dtype dtype) {
  Precision p;
  p.cpu = p.cuda = dtype;
  p.loss_scaling = dtype == Dtype::kFloat16 ? LossScaling::kDynamic : LossScaling::kNone;
  return p;
}

Dtype boundary_dtype(Dtype sender, Dtype receiver) {
  return dtype_bytes(sender) < dtype_bytes(receiver) ? sender : receiver;
}

std::string loss_scaling_name(LossScaling scaling) {
  switch (scaling) {
    case LossScaling::kNone: return "none";
    case LossScaling::kDynamic: return "dynamic";
  }
  throw std::logic_error("unknown LossScaling");
}

LossScaling parse_loss_scaling(const std::string& name) {
  if (name == "none") return LossScaling::kNone;
  if (name == "dynamic") return LossScaling::kDynamic;
  throw InputError("precision.loss_scaling is '" + name + "'; expected dynamic or none");
}

}  // namespace pipetrain
