#include "runtime/backends/cpu/cpu_backend.h"

namespace pipetrain {

StandInCopy::StandInCopy(const RingSpec& ring) : slot_bytes_(ring.slot_bytes), held_(ring.slot_bytes > 0 ? ring.slots : 0) {
  for (int i = 0; ring.slot_bytes > 0 && i < ring.slots; ++i) slots_.push_back(torch::empty({ring.slot_bytes}, torch::kUInt8));
}

void StandInCopy::begin_step() {
  held_.reset();
  staged_by_op_ = 0;
}

torch::Tensor StandInCopy::staging(int k, c10::IntArrayRef sizes, torch::ScalarType dtype) {
  if (c10::multiply_integers(sizes) * static_cast<int64_t>(c10::elementSize(dtype)) > slot_bytes_) return {};
  const int slot = held_.claim(k, [](int) { return true; });  // a slot's copy is done when send() returns
  if (slot < 0) return {};
  return torch::from_blob(slots_[static_cast<size_t>(slot)].data_ptr(), sizes, torch::TensorOptions().dtype(dtype));
}

torch::Tensor StandInCopy::send(int k, const torch::Tensor& tensor) {
  const int slot = held_.slot_of(k);
  if (slot >= 0 && tensor.data_ptr() == slots_[static_cast<size_t>(slot)].data_ptr()) ++staged_by_op_;
  torch::Tensor there = tensor.clone(torch::MemoryFormat::Contiguous);  // into the stand-in's memory
  held_.release(k);  // only now: an op may write the slot again
  return there;
}

DeviceCopy::DeviceCopy(torch::Device from, torch::Device to) : to_(to), resource_(from.str() + "->" + to.str()) {}

torch::Tensor DeviceCopy::send(int, const torch::Tensor& tensor) { return tensor.to(to_); }

}  // namespace pipetrain
