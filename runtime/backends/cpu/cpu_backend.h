// The CPU backend: a stage on the CPU runs its ops on the calling thread (the default StageDevice),
// and tensors cross between stages on the CPU by hand-off. DeviceCopy is the plain copy for a pair
// of devices no backend links better.
#pragma once

#include <torch/types.h>

#include <string>

#include "runtime/backends/backend.h"

namespace pipetrain {

// Same device: a hand-off (the tensor is passed, not copied).
class HandOff : public Transfer {
 public:
  torch::Tensor send(int, const torch::Tensor& tensor) override { return tensor; }
  std::string resource() const override { return ""; }
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
