// The device interface: what a kind of device provides to a training stage. Each backend folder
// (cpu/, cuda/) implements it; the registry (registry.h) is the one place that picks an
// implementation for a device, and the only file that knows whether this build has CUDA. A backend
// includes this header and nothing else of runtime/.
//
//   StageDevice    runs a stage's ops on its device: a stream-like handle whose CPU variant does
//                  nothing extra (the executor's host clock times CPU ops)
//   Transfer       moves a boundary's tensors from one device to another, one direction
//   DeviceMemoryReport  a device allocator's peaks and cap
//
//   std::unique_ptr<StageDevice> runner = make_stage_device(device, micro_batches);   // registry.h
//   runner->run_op(EventKind::kForward, k, [&] { out = stage.forward(k, x); });
//   torch::Tensor there = transfer->send(k, out);
#pragma once

#include <torch/types.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "scheduler/simulator.h"  // EventKind

namespace pipetrain {

// A span a device timed itself with CUDA events, on the host's steady clock (seconds since its epoch).
struct DeviceSpan {
  EventKind kind;
  int micro_batch;
  double start;
  double end;
};

// How a stage's ops run on its device. On a GPU each op is launched on the device's compute stream
// (its default stream, so every other use of the stage's tensors is ordered after it) between two
// CUDA events: a transfer waits for exactly the op that made its tensor, and the step's spans come
// from the GPU's own clock, not from when the host finished launching.
class StageDevice {
 public:
  virtual ~StageDevice() = default;
  // Runs body as op (kind, micro-batch k); kind is kForward or kBackward.
  virtual void run_op(EventKind kind, int k, const std::function<void()>& body) { (void)kind, (void)k, body(); }
  virtual void begin_step() {}
  // Waits for the step's device work and returns its spans (empty on the CPU).
  virtual std::vector<DeviceSpan> finish_step() { return {}; }
  // Waits until everything launched on the stage's stream is done.
  virtual void synchronize() {}
};

// Moves activations or gradients across one boundary in one direction. The executor calls send()
// from that direction's own serial node, so a transfer never runs two micro-batches at once and can
// own per-slot buffers.
class Transfer {
 public:
  virtual ~Transfer() = default;
  // Makes `tensor` (micro-batch k) available on the receiving device.
  virtual torch::Tensor send(int k, const torch::Tensor& tensor) = 0;
  // Host memory the sending stage's op may write micro-batch k into (`sizes` of `dtype`), so that
  // send() copies it from there with no host memcpy of its own: a free slot of the transfer's
  // staging ring, held for k until send(k) has copied it. Undefined when the transfer stages
  // nothing (a hand-off, a copy out of a GPU) or has no slot free now (it never waits: the slot's
  // sends may be queued behind this op); send() then stages the tensor itself. Called on the
  // sending stage's thread.
  virtual torch::Tensor staging(int k, c10::IntArrayRef sizes, torch::ScalarType dtype) {
    (void)k, (void)sizes, (void)dtype;
    return {};
  }
  // How many of this step's sends found their tensor already staged by the sending op.
  virtual int staged_by_op() const { return 0; }
  // "cpu->cuda:0": the resource name the simulator and the trace use; empty for a free hand-off.
  virtual std::string resource() const = 0;
  // Pinned host memory the transfer holds (its staging ring), allocated once.
  virtual int64_t pinned_bytes() const { return 0; }
  virtual void begin_step() {}
  // Waits for the step's copies and returns their spans, timed on the copy stream (empty when the
  // host clock times the transfer).
  virtual std::vector<DeviceSpan> finish_step() { return {}; }
};

// A staging ring: `slots` pinned buffers of `slot_bytes` each, for one boundary and direction. The
// plan sizes them, and memory/estimate.h counts the same bytes.
struct RingSpec {
  int slots = 2;
  int64_t slot_bytes = 0;
  int micro_batches = 1;  // per step: one timed copy each
};

// Which slots of a staging ring micro-batches hold: claimed on the sending stage's thread
// (Transfer::staging), released on the transfer's once the copy no longer reads the slot.
class StagedSlots {
 public:
  explicit StagedSlots(int slots) : holder_(static_cast<size_t>(slots), -1) {}
  // A slot that no micro-batch holds and that `ready(slot)` says its last copy has left, now held
  // for k; -1 when there is none.
  template <class Ready>
  int claim(int k, Ready&& ready) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t i = 0; i < holder_.size(); ++i) {
      if (holder_[i] < 0 && ready(static_cast<int>(i))) {
        holder_[i] = k;
        return static_cast<int>(i);
      }
    }
    return -1;
  }
  // The slot k holds, or -1.
  int slot_of(int k) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t i = 0; i < holder_.size(); ++i) {
      if (holder_[i] == k) return static_cast<int>(i);
    }
    return -1;
  }
  // The slot k holds, no longer held (once nothing reads or writes it for k); -1 when it holds none.
  int release(int k) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t i = 0; i < holder_.size(); ++i) {
      if (holder_[i] == k) {
        holder_[i] = -1;
        return static_cast<int>(i);
      }
    }
    return -1;
  }
  // Every slot free (a step that stopped early leaves none held into the next).
  void reset() {
    std::lock_guard<std::mutex> lock(mutex_);
    std::fill(holder_.begin(), holder_.end(), -1);
  }

 private:
  std::mutex mutex_;
  std::vector<int> holder_;  // per slot: the micro-batch holding it, -1 none
};

// A device allocator against its budget. peak_* since the last reset.
struct DeviceMemoryReport {
  int64_t total_bytes = 0;           // the card's memory
  int64_t cap_bytes = 0;             // the cap in force, 0 = none
  int64_t peak_allocated_bytes = 0;  // tensors
  int64_t peak_reserved_bytes = 0;   // what the allocator took from the driver (tensors + its cache)
  int64_t reserved_bytes = 0;        // the same, now (the memory guard samples it each step)
};

}  // namespace pipetrain
