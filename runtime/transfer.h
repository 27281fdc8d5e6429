// Moving activations and gradients between stages: one interface, one implementation per kind of link.
//
// A boundary has one Transfer per direction; the executor calls send() from that direction's own
// serial node, so a transfer never runs two micro-batches at once and can own per-slot buffers.
// Between stages on the same CPU a transfer is a plain hand-off: the tensor itself, no copy. The
// CUDA implementation (pinned staging rings, copy streams, events) plugs in behind make_transfer;
// it is the only place besides runtime/devices that will know CUDA.
//
//   std::unique_ptr<Transfer> t = make_transfer(torch::kCPU, torch::kCPU);
//   torch::Tensor there = t->send(k, activation);
#pragma once

#include <torch/types.h>

#include <memory>
#include <string>

namespace pipetrain {

class Transfer {
 public:
  virtual ~Transfer() = default;
  // Makes `tensor` (micro-batch k) available on the receiving device.
  virtual torch::Tensor send(int k, const torch::Tensor& tensor) = 0;
  // "cpu->cpu": the resource name the simulator and the trace use; empty for a free hand-off.
  virtual std::string resource() const = 0;
};

// Same device: a hand-off (the tensor is passed, not copied).
class HandOff : public Transfer {
 public:
  torch::Tensor send(int, const torch::Tensor& tensor) override { return tensor; }
  std::string resource() const override { return ""; }
};

// Between different devices: a synchronous copy (.to(device)), until the CUDA transfer lands.
class DeviceCopy : public Transfer {
 public:
  DeviceCopy(torch::Device from, torch::Device to);
  torch::Tensor send(int k, const torch::Tensor& tensor) override;
  std::string resource() const override { return resource_; }

 private:
  torch::Device to_;
  std::string resource_;
};

std::unique_ptr<Transfer> make_transfer(torch::Device from, torch::Device to);

}  // namespace pipetrain
