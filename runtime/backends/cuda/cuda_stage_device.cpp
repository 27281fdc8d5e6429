#include "runtime/backends/cuda/cuda_stage_device.h"

#include <c10/cuda/CUDAGuard.h>

namespace pipetrain::cuda_backend {

// The compute stream is the device's default stream: optimizer steps, gradient norms, validation
// and checkpoints touch the stage's tensors outside run_op, and on the default stream they are
// ordered after its ops without anyone having to remember a guard. The copy streams are pool
// streams, which do not synchronise with it implicitly: events order them.
CudaStageDevice::CudaStageDevice(torch::Device device, int micro_batches)
    : device_(device), stream_(c10::cuda::getDefaultCUDAStream(device.index())) {
  c10::cuda::CUDAGuard guard(device_.index());
  forward_ = std::make_unique<SpanClock>(micro_batches);
  backward_ = std::make_unique<SpanClock>(micro_batches);
}

SpanClock& CudaStageDevice::clock(EventKind kind) {
  if (kind == EventKind::kForward) return *forward_;
  if (kind == EventKind::kBackward) return *backward_;
  throw std::logic_error("CudaStageDevice times forward and backward ops only");
}

void CudaStageDevice::run_op(EventKind kind, int k, const std::function<void()>& body) {
  c10::cuda::CUDAStreamGuard guard(stream_);
  SpanClock& c = clock(kind);
  c.begin(k).record(stream_.stream());
  body();
  c.end(k).record(stream_.stream());
  c.mark_used(k);
}

cudaEvent_t CudaStageDevice::op_done(EventKind kind, int k) {
  SpanClock& c = clock(kind);
  return c.used(k) ? c.end(k).get() : nullptr;
}

void CudaStageDevice::begin_step() {
  c10::cuda::CUDAGuard guard(device_.index());
  forward_->start(stream_.stream());
  backward_->start(stream_.stream());
}

std::vector<DeviceSpan> CudaStageDevice::finish_step() {
  std::vector<DeviceSpan> spans;
  for (EventKind kind : {EventKind::kForward, EventKind::kBackward}) {
    SpanClock& c = clock(kind);
    for (int k = 0; k < c.size(); ++k) {
      if (!c.used(k)) continue;
      c.end(k).synchronize();
      spans.push_back({kind, k, c.host_time(c.begin(k)), c.host_time(c.end(k))});
    }
  }
  return spans;
}

void CudaStageDevice::synchronize() { stream_.synchronize(); }

std::unique_ptr<StageDevice> make_stage_device(torch::Device device, int micro_batches) {
  return std::make_unique<CudaStageDevice>(device, micro_batches);
}

}  // namespace pipetrain::cuda_backend
