// A GPU stage's op runner (cuda/ only): ops on the device's default stream between CUDA events.
#pragma once

#include <c10/cuda/CUDAStream.h>

#include <array>
#include <memory>

#include "runtime/backends/backend.h"
#include "runtime/backends/cuda/cuda_util.h"

namespace pipetrain::cuda_backend {

class CudaStageDevice final : public StageDevice {
 public:
  CudaStageDevice(torch::Device device, int micro_batches);

  void run_op(EventKind kind, int k, const std::function<void()>& body) override;
  void begin_step() override;
  std::vector<DeviceSpan> finish_step() override;
  void synchronize() override;

  // The event recorded when op (kind, k) of this step finished launching: work after it on the
  // stream is not part of the op. Null if the op has not run this step.
  cudaEvent_t op_done(EventKind kind, int k);
  c10::cuda::CUDAStream stream() const { return stream_; }

 private:
  SpanClock& clock(EventKind kind);

  torch::Device device_;
  c10::cuda::CUDAStream stream_;
  std::unique_ptr<SpanClock> forward_, backward_;
};

}  // namespace pipetrain::cuda_backend
