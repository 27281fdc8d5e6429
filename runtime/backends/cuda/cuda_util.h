// Small RAII pieces over the CUDA runtime for cuda/: a checked call, a timing event, a pinned buffer.
#pragma once

#include <cuda_runtime_api.h>

#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace pipetrain::cuda_backend {

inline void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw std::runtime_error(std::string(what) + " failed: " + cudaGetErrorString(status));
}

// The host's steady clock in seconds since its epoch: the clock DeviceSpan uses.
inline double host_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// A CUDA event with timing (created on the current device).
class Event {
 public:
  Event() { check(cudaEventCreateWithFlags(&event_, cudaEventDefault), "cudaEventCreateWithFlags"); }
  ~Event() {
    if (event_ != nullptr) cudaEventDestroy(event_);
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  Event(Event&& other) noexcept : event_(std::exchange(other.event_, nullptr)), recorded_(other.recorded_) {}
  Event& operator=(Event&&) = delete;

  void record(cudaStream_t stream) {
    check(cudaEventRecord(event_, stream), "cudaEventRecord");
    recorded_ = true;
  }
  // Blocks this host thread until the work before the event is done; nothing to wait for if never recorded.
  void synchronize() const {
    if (recorded_) check(cudaEventSynchronize(event_), "cudaEventSynchronize");
  }
  // Milliseconds from `since` to this event (both recorded and complete).
  float milliseconds_since(const Event& since) const {
    float ms = 0.0f;
    check(cudaEventElapsedTime(&ms, since.event_, event_), "cudaEventElapsedTime");
    return ms;
  }
  cudaEvent_t get() const { return event_; }
  bool recorded() const { return recorded_; }

 private:
  cudaEvent_t event_ = nullptr;
  bool recorded_ = false;
};

// Page-locked host memory (cudaHostAlloc), so copies to and from the GPU run as DMA without staging.
class PinnedBuffer {
 public:
  explicit PinnedBuffer(int64_t bytes) : bytes_(bytes) {
    check(cudaHostAlloc(&data_, static_cast<size_t>(bytes), cudaHostAllocDefault),
          ("cudaHostAlloc of " + std::to_string(bytes) + " pinned bytes").c_str());
  }
  ~PinnedBuffer() {
    if (data_ != nullptr) cudaFreeHost(data_);
  }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  PinnedBuffer(PinnedBuffer&& other) noexcept : data_(std::exchange(other.data_, nullptr)), bytes_(other.bytes_) {}
  PinnedBuffer& operator=(PinnedBuffer&&) = delete;

  void* data() const { return data_; }
  int64_t bytes() const { return bytes_; }

 private:
  void* data_ = nullptr;
  int64_t bytes_ = 0;
};

// The events of one op per micro-batch, and the anchor that maps them onto the host clock: the
// anchor is recorded and waited for at the start of a step, and the host time taken just after.
class SpanClock {
 public:
  explicit SpanClock(int micro_batches) {
    for (int k = 0; k < micro_batches; ++k) {
      begin_.emplace_back();
      end_.emplace_back();
    }
    used_.assign(static_cast<size_t>(micro_batches), false);
  }
  void start(cudaStream_t stream) {
    anchor_.record(stream);
    anchor_.synchronize();
    anchor_host_seconds_ = host_seconds();
    used_.assign(used_.size(), false);
  }
  Event& begin(int k) { return begin_.at(static_cast<size_t>(k)); }
  Event& end(int k) { return end_.at(static_cast<size_t>(k)); }
  // Op k ran this step: its events count in the step's spans.
  void mark_used(int k) { used_.at(static_cast<size_t>(k)) = true; }
  bool used(int k) const { return used_.at(static_cast<size_t>(k)); }
  int size() const { return static_cast<int>(used_.size()); }
  // Host-clock seconds of a completed event.
  double host_time(const Event& e) const { return anchor_host_seconds_ + e.milliseconds_since(anchor_) / 1e3; }

 private:
  std::vector<Event> begin_, end_;
  std::vector<bool> used_;
  Event anchor_;
  double anchor_host_seconds_ = 0.0;
};

}  // namespace pipetrain::cuda_backend
