// Moving activations and gradients between stages: one interface, one implementation per kind of link.
//
// A boundary has one Transfer per direction; the executor calls send() from that direction's own
// serial node, so a transfer never runs two micro-batches at once and can own per-slot buffers.
// Between stages on the same CPU a transfer is a plain hand-off: the tensor itself, no copy. Between
// the CPU and a GPU it is a ring of pinned staging buffers and a copy stream of its own (cuda/),
// ordered against the GPU stage's compute with CUDA events; runtime/devices.cpp picks the kind.
//
//   std::unique_ptr<Transfer> t = make_transfer(torch::kCPU, gpu, ring, /*producer=*/cpu_stage, EventKind::kForward);
//   torch::Tensor there = t->send(k, activation);
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "scheduler/simulator.h"

namespace pipetrain {

// A span a device timed itself with CUDA events, on the host's steady clock (seconds since its epoch).
struct DeviceSpan {
  EventKind kind;
  int micro_batch;
  double start;
  double end;
};

class Transfer {
 public:
  virtual ~Transfer() = default;
  // Makes `tensor` (micro-batch k) available on the receiving device.
  virtual torch::Tensor send(int k, const torch::Tensor& tensor) = 0;
  // "cpu->cpu": the resource name the simulator and the trace use; empty for a free hand-off.
  virtual std::string resource() const = 0;
  // Pinned host memory the transfer holds (its staging ring), allocated once.
  virtual int64_t pinned_bytes() const { return 0; }
  virtual void begin_step() {}
  // Waits for the step's copies and returns their spans, timed on the copy stream (empty when the
  // host clock times the transfer).
  virtual std::vector<DeviceSpan> finish_step() { return {}; }
};

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

// A staging ring: `slots` pinned buffers of `slot_bytes` each, per boundary and direction. The
// planner counts the same (memory/estimate.h: buffers = ring_slots x boundary activation bytes).
struct RingSpec {
  int slots = 2;
  int64_t slot_bytes = 0;
  int micro_batches = 1;  // per step: one timed copy each
};

class StageDevice;
// The transfer for a boundary from `from` to `to`. `producer` runs the sending stage's ops and
// `produced_by` is the op that makes what is sent (kForward: activations; kBackward: gradients), so
// a copy out of a GPU waits for exactly that op. Defined in the device registry (runtime/devices.cpp).
std::unique_ptr<Transfer> make_transfer(torch::Device from, torch::Device to, const RingSpec& ring = {},
                                        StageDevice* producer = nullptr, EventKind produced_by = EventKind::kForward);

}  // namespace pipetrain
