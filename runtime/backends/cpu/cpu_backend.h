// The CPU backend: a stage on the CPU runs its ops on the calling thread (the default StageDevice),
// and tensors cross between stages on the CPU by hand-off. DeviceCopy is the plain copy for a pair
// of devices no backend links better.
#pragma once

#include <torch/types.h>

#include <string>
#include <vector>

#include "runtime/backends/backend.h"

namespace pipetrain {

// Same device: a hand-off (the tensor is passed, not copied).
class HandOff : public Transfer {
 public:
  torch::Tensor send(int, const torch::Tensor& tensor) override { return tensor; }
  std::string resource() const override { return ""; }
};

// Into a GPU's stand-in (standin:N, memory/device.h) from host memory: the GPU's path with plain
// memory for pinned. The sending op writes into a ring slot when one is free (staging); send()
// copies the slot, or the tensor when the op had none, into memory of the stand-in's own.
class StandInCopy : public Transfer {
 public:
  explicit StandInCopy(const RingSpec& ring);
  torch::Tensor staging(int k, c10::IntArrayRef sizes, torch::ScalarType dtype) override;
  torch::Tensor send(int k, const torch::Tensor& tensor) override;
  std::string resource() const override { return ""; }
  void begin_step() override;
  int staged_by_op() const override { return staged_by_op_; }

 private:
  int64_t slot_bytes_;
  std::vector<torch::Tensor> slots_;  // bytes
  StagedSlots held_;
  int staged_by_op_ = 0;
};

// Between different devices without a better link: a synchronous copy (.to(device)).
class DeviceCopy : public Transfer {
 public:
  DeviceCopy(torch::Device from, torch::Device to);
  torch::Tensor send(int k, const torch::Tensor& tensor) override;
  std::string resource() const override { return resource_; }

 private:
  torch::Device to_;
  std::string resource_;
};

}  // namespace pipetrain
