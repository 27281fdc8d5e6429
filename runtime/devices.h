// The devices this build and this machine have, and the stage map's device names mapped onto them.
//
// devices.cpp is the device registry: the one file that holds the `#if PIPETRAIN_WITH_CUDA`. It
// hands out what a device needs (how a stage's ops run, how tensors cross a boundary, the GPU
// memory cap and statistics); the CUDA implementations live in cuda/, which CMake builds only when
// the LibTorch it found has CUDA. A stage map that names cuda:N on a build without CUDA, or a
// machine without that GPU, is refused (InputError, exit 2), unless the user asked for GPU stages to
// run on the CPU; then each such stage becomes a CPU stage sharing the CPU's pool, and a warning says so.
//
//   std::vector<std::string> warnings;
//   StageMap map = place_stages(run.stages, /*gpu_stages_on_cpu=*/false, &warnings);
//   torch::Device d = torch_device(map.stages[0].device);
//   std::unique_ptr<StageDevice> runner = make_stage_device(d, micro_batches);
//   runner->run_op(EventKind::kForward, k, [&] { out = stage.forward(k, x); });
#pragma once

#include <torch/types.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "memory/stage_map.h"
#include "runtime/transfer.h"
#include "scheduler/simulator.h"

namespace pipetrain {

bool cuda_available();
int cuda_device_count();
// "LibTorch 1.13.1, CPU only" or "LibTorch 2.11.0 with CUDA, 1 GPU".
std::string torch_build_description();

// The map with every device checked against this build and machine (see above).
StageMap place_stages(const StageMap& map, bool gpu_stages_on_cpu, std::vector<std::string>* warnings);

// The planner's default shapes (scheduler/planner.h) whose devices this build and machine can run.
std::vector<std::vector<std::string>> runnable_shapes(const HardwareSpec& hardware);

// "cpu" -> kCPU, "cuda:1" -> {kCUDA, 1}. The name must have passed place_stages.
torch::Device torch_device(const std::string& name);

// True when this pipetrain was built against a LibTorch with CUDA (cuda/ compiled in).
bool built_with_cuda();

// How a stage's ops run on its device: a stream-like handle whose CPU variant is a no-op (the
// executor's host clock times CPU ops). On a GPU each op is launched on the device's compute stream
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
std::unique_ptr<StageDevice> make_stage_device(torch::Device device, int micro_batches);

// The GPU's caching allocator against its budget. peak_* since the last reset_vram_peak.
struct VramReport {
  int64_t total_bytes = 0;  // the card's memory
  int64_t cap_bytes = 0;    // the cap in force (cap_device_memory), 0 = none
  int64_t peak_allocated_bytes = 0;  // tensors
  int64_t peak_reserved_bytes = 0;   // what the allocator took from the driver (tensors + its cache)
  int64_t reserved_bytes = 0;        // the same, now (the memory guard samples it each step)
};
// Caps the caching allocator of `device` at `bytes` (a per-process memory fraction), so a large GPU
// stands in for a smaller card: allocations past it fail as out of memory. No cap when bytes is 0
// or at least the card's memory. Returns the cap in force. Throws std::runtime_error on a CPU build.
int64_t cap_device_memory(torch::Device device, int64_t bytes);
VramReport vram_report(torch::Device device);
void reset_vram_peak(torch::Device device);

// A raw cudaMemcpyAsync of `bytes` between a pinned host buffer and `device`, `reps` times back to
// back on one stream: the median seconds per copy. The benchmarks' baseline for the staging rings.
double raw_pinned_copy_seconds(torch::Device device, int64_t bytes, bool host_to_device, int reps);

}  // namespace pipetrain
