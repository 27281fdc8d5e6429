// pipetrain's CUDA side, behind the device registry (runtime/backends/registry.cpp): a GPU stage's op runner,
// the pinned-ring transfers, the VRAM cap and the allocator's statistics. This header names no CUDA
// type, so the registry includes it like any other; the sources beside it are compiled only when
// the LibTorch CMake found has CUDA (and, as a compile-only check, whenever the toolkit's headers
// are present: see CMakeLists.txt).
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <memory>

#include "runtime/backends/backend.h"
#include "stages/weight_stream.h"

namespace pipetrain::cuda_backend {

std::unique_ptr<StageDevice> make_stage_device(torch::Device device, int micro_batches);
std::unique_ptr<Transfer> make_transfer(torch::Device from, torch::Device to, const RingSpec& ring, StageDevice* producer,
                                        EventKind produced_by);
int64_t cap_memory(torch::Device device, int64_t bytes);
DeviceMemoryReport device_memory_report(torch::Device device);
void reset_device_memory_peak(torch::Device device);
double raw_pinned_copy_seconds(torch::Device device, int64_t bytes, bool host_to_device, int reps);
// A streamed stage's copy engine on `gpu` (cuda_weight_stream.cpp).
std::unique_ptr<WeightStream> make_weight_stream(torch::Device gpu, int slots, int64_t slot_elements, torch::Dtype compute);

}  // namespace pipetrain::cuda_backend
