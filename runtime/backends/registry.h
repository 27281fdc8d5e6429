// The device registry: which devices this build and this machine have, and the implementation of
// the device interface (backend.h) for each of them.
//
// registry.cpp is the one file that holds the `#if PIPETRAIN_WITH_CUDA`. The CUDA implementations
// live in cuda/, which CMake builds only when the LibTorch it found has CUDA. A stage map that
// names cuda:N on a build without CUDA, or a machine without that GPU, is refused (InputError,
// exit 2), unless the user asked for GPU stages to run on the CPU; then each such stage becomes a
// CPU stage sharing the CPU's pool (a stage streaming its weights becomes one on standin:N, the
// GPU's stand-in, so that it still streams: memory/device.h), and a warning says so.
//
//   std::vector<std::string> warnings;
//   StageMap map = place_stages(run.stages, /*gpu_stages_on_cpu=*/false, &warnings);
//   std::unique_ptr<StageDevice> runner = make_stage_device(map.stages[0].device, micro_batches);
//   torch::Device where = torch_device(map.stages[0].device);
#pragma once

#include <torch/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "memory/device.h"
#include "memory/stage_map.h"
#include "runtime/backends/backend.h"
#include "scheduler/planner.h"  // Shape
#include "stages/weight_stream.h"

namespace pipetrain {

bool cuda_available();
int cuda_device_count();
// "LibTorch 1.13.1, CUDA not available" or "LibTorch 2.11.0 with CUDA, 1 GPU".
std::string torch_build_description();
// True when this pipetrain was built against a LibTorch with CUDA (cuda/ compiled in).
bool built_with_cuda();

// The map with every device checked against this build and machine (see above).
StageMap place_stages(const StageMap& map, bool gpu_stages_on_cpu, std::vector<std::string>* warnings);

// The planner's default shapes (scheduler/planner.h) whose devices this build and machine can run.
std::vector<Shape> runnable_shapes(const HardwareSpec& hardware);

// Whether this build and machine can compute on `device`.
bool device_available(DeviceId device);

// The LibTorch device: cpu -> kCPU, cuda:1 -> {kCUDA, 1}.
torch::Device torch_device(DeviceId device);

// Whether this LibTorch computes a layer in `dtype` on `device` (LibTorch 1.13 has no float16
// matrix product on the CPU, say): nothing when it does, else why not. Tried once per device and
// dtype, with a small matrix product and its backward.
std::optional<std::string> cannot_compute(DeviceId device, torch::Dtype dtype);

std::unique_ptr<StageDevice> make_stage_device(DeviceId device, int micro_batches);

// The copy calls of a stage whose weights stream into `device` (stages/weight_stream.h): a window
// of `slots` slots of `slot_elements` in `compute`: the CPU stand-in's (standin:N), or the GPU's
// copy engine (cuda/cuda_weight_stream.cpp; on a build without CUDA an InputError saying so).
std::unique_ptr<WeightStream> make_weight_stream(DeviceId device, int slots, int64_t slot_elements, torch::Dtype compute);

// The transfer for a boundary from `from` to `to`. `producer` runs the sending stage's ops and
// `produced_by` is the op that makes what is sent (kForward: activations; kBackward: gradients), so
// a copy out of a GPU waits for exactly that op.
std::unique_ptr<Transfer> make_transfer(DeviceId from, DeviceId to, const RingSpec& ring = {},
                                        StageDevice* producer = nullptr, EventKind produced_by = EventKind::kForward);

// Caps the caching allocator of `device` at `bytes` (a per-process memory fraction), so a large GPU
// stands in for a smaller card: allocations past it fail as out of memory. No cap when bytes is 0
// or at least the card's memory. Returns the cap in force. Throws std::runtime_error on a CPU build.
int64_t cap_device_memory(DeviceId device, int64_t bytes);
DeviceMemoryReport device_memory_report(DeviceId device);
void reset_device_memory_peak(DeviceId device);

// A raw cudaMemcpyAsync of `bytes` between a pinned host buffer and `device`, `reps` times back to
// back on one stream: the median seconds per copy. The benchmarks' baseline for the staging rings.
double raw_pinned_copy_seconds(DeviceId device, int64_t bytes, bool host_to_device, int reps);

}  // namespace pipetrain
