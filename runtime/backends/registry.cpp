#include "runtime/backends/registry.h"

#include <torch/cuda.h>
#include <torch/version.h>

#include <algorithm>
#include <map>
#include <mutex>

#include "memory/errors.h"
#include "runtime/backends/cpu/cpu_backend.h"
#include "scheduler/planner.h"

#if PIPETRAIN_WITH_CUDA
#include "runtime/backends/cuda/cuda_backend.h"
#endif

namespace pipetrain {

bool cuda_available() { return torch::cuda::is_available(); }

int cuda_device_count() { return cuda_available() ? static_cast<int>(torch::cuda::device_count()) : 0; }

std::string torch_build_description() {
  const int gpus = cuda_device_count();
  std::string text = std::string("LibTorch ") + TORCH_VERSION;
  if (gpus == 0) return text + ", CUDA not available";
  return text + " with CUDA, " + std::to_string(gpus) + " GPU" + (gpus == 1 ? "" : "s");
}

bool device_available(DeviceId device) {
  switch (device.kind) {
    case DeviceKind::kCpu: return true;
    case DeviceKind::kCuda: return device.index < cuda_device_count();
    case DeviceKind::kStandIn: return true;
  }
  throw std::logic_error("unknown DeviceKind");
}

StageMap place_stages(const StageMap& map, bool gpu_stages_on_cpu, std::vector<std::string>* warnings) {
  StageMap placed = map;
  for (size_t s = 0; s < placed.stages.size(); ++s) {
    StageSpec& st = placed.stages[s];
    if (device_available(st.device)) continue;
    const int gpus = cuda_device_count();
    const std::string why = gpus == 0 ? "this pipetrain has no usable CUDA (" + torch_build_description() + ")"
                                      : "this machine has " + std::to_string(gpus) + " GPU(s)";
    if (!gpu_stages_on_cpu) {
      throw InputError("stage " + std::to_string(s) + " is placed on " + st.device.name() + ", but " + why +
                       "; place it on cpu, or pass --gpu-stages-on-cpu to run GPU stages on the CPU");
    }
    if (warnings != nullptr) {
      warnings->push_back("stage " + std::to_string(s) + " was placed on " + st.device.name() + ", but " + why +
                          ": it runs on the CPU (--gpu-stages-on-cpu), sharing the CPU stages' pool of cores");
    }
    if (st.placement().streamed()) {
      st.device = DeviceId::stand_in(st.device.index);  // still streamed: weights and optimizer stay in RAM
      if (warnings != nullptr) warnings->back() = "stage " + std::to_string(s) + " was placed on " + map.stages[s].device.name() +
                                                  ", but " + why + ": it streams through " + st.device.name() +
                                                  ", the GPU's stand-in on the CPU (--gpu-stages-on-cpu)";
      continue;
    }
    st = StageSpec{DeviceId::cpu(), st.first, st.last, 0, {}, {}};
  }
  return placed;
}

std::vector<Shape> runnable_shapes(const HardwareSpec& hardware) {
  std::vector<Shape> shapes;
  for (const Shape& shape : default_shapes(hardware)) {
    if (std::all_of(shape.begin(), shape.end(), device_available)) shapes.push_back(shape);
  }
  return shapes;
}

namespace {
// Whether either end of a copy is a real GPU (the CPU and stand-ins share host memory: a hand-off).
bool on_cuda(DeviceId a, DeviceId b) { return a.kind == DeviceKind::kCuda || b.kind == DeviceKind::kCuda; }
}  // namespace

std::unique_ptr<WeightStream> make_weight_stream(DeviceId device, int slots, int64_t slot_elements, torch::Dtype compute) {
  if (device.kind == DeviceKind::kStandIn) return std::make_unique<StandInWeightStream>(slots, slot_elements, compute);
#if PIPETRAIN_WITH_CUDA
  return cuda_backend::make_weight_stream(torch_device(device), slots, slot_elements, compute);
#else
  throw InputError("stages on " + device.name() + " stream through CUDA, and this pipetrain was built without it (" +
                   torch_build_description() + "); --gpu-stages-on-cpu runs them on standin:N, the GPU's stand-in");
#endif
}

torch::Device torch_device(DeviceId device) {
  switch (device.kind) {
    case DeviceKind::kCpu: return torch::kCPU;
    case DeviceKind::kCuda: return {torch::kCUDA, static_cast<c10::DeviceIndex>(device.index)};
    case DeviceKind::kStandIn: return torch::kCPU;  // its memory is host memory, budgeted apart
  }
  throw std::logic_error("unknown DeviceKind");
}

std::optional<std::string> cannot_compute(DeviceId device, torch::Dtype dtype) {
  static std::mutex mutex;
  static std::map<std::pair<DeviceId, torch::Dtype>, std::optional<std::string>> tried;
  std::lock_guard<std::mutex> lock(mutex);
  const auto key = std::make_pair(device, dtype);
  if (const auto it = tried.find(key); it != tried.end()) return it->second;
  std::optional<std::string> why;
  try {
    const auto options = torch::TensorOptions().device(torch_device(device)).dtype(dtype);
    const torch::Tensor a = torch::ones({4, 4}, options).requires_grad_(true);
    torch::matmul(a, a).sum().backward();
  } catch (const c10::Error& e) {
    why = std::string(c10::toString(dtype)) + " on " + device.name() + ": " + e.what_without_backtrace() + " (" +
          torch_build_description() + ")";
  }
  tried[key] = why;
  return why;
}

#if PIPETRAIN_WITH_CUDA

bool built_with_cuda() { return true; }

std::unique_ptr<StageDevice> make_stage_device(DeviceId device, int micro_batches) {
  switch (device.kind) {
    case DeviceKind::kCpu: return std::make_unique<StageDevice>();
    case DeviceKind::kCuda: return cuda_backend::make_stage_device(torch_device(device), micro_batches);
    case DeviceKind::kStandIn: return std::make_unique<StageDevice>();
  }
  throw std::logic_error("unknown DeviceKind");
}

std::unique_ptr<Transfer> make_transfer(DeviceId from, DeviceId to, const RingSpec& ring, StageDevice* producer,
                                        EventKind produced_by) {
  if (from.is_cpu() && to.kind == DeviceKind::kStandIn) return std::make_unique<StandInCopy>(ring);
  if (from == to || !on_cuda(from, to)) return std::make_unique<HandOff>();
  if (crosses_host_boundary(from, to)) {
    return cuda_backend::make_transfer(torch_device(from), torch_device(to), ring, producer, produced_by);
  }
  return std::make_unique<DeviceCopy>(torch_device(from), torch_device(to));  // GPU to GPU: not a path this version plans
}

int64_t cap_device_memory(DeviceId device, int64_t bytes) { return cuda_backend::cap_memory(torch_device(device), bytes); }
DeviceMemoryReport device_memory_report(DeviceId device) { return cuda_backend::device_memory_report(torch_device(device)); }
void reset_device_memory_peak(DeviceId device) { cuda_backend::reset_device_memory_peak(torch_device(device)); }
double raw_pinned_copy_seconds(DeviceId device, int64_t bytes, bool host_to_device, int reps) {
  return cuda_backend::raw_pinned_copy_seconds(torch_device(device), bytes, host_to_device, reps);
}

#else  // a CPU-only LibTorch: every device is the CPU, or place_stages refused the map

namespace {
[[noreturn]] void no_cuda(const char* what) {
  throw std::runtime_error(std::string(what) + " needs CUDA, and this pipetrain was built without it (" +
                           torch_build_description() + ")");
}
}  // namespace

bool built_with_cuda() { return false; }

std::unique_ptr<StageDevice> make_stage_device(DeviceId device, int) {
  if (device.kind == DeviceKind::kCuda) no_cuda(("a stage on " + device.name()).c_str());
  return std::make_unique<StageDevice>();
}

std::unique_ptr<Transfer> make_transfer(DeviceId from, DeviceId to, const RingSpec& ring, StageDevice*, EventKind) {
  if (from.is_cpu() && to.kind == DeviceKind::kStandIn) return std::make_unique<StandInCopy>(ring);
  if (from == to || !on_cuda(from, to)) return std::make_unique<HandOff>();
  return std::make_unique<DeviceCopy>(torch_device(from), torch_device(to));
}

int64_t cap_device_memory(DeviceId, int64_t) { no_cuda("a VRAM cap"); }
DeviceMemoryReport device_memory_report(DeviceId) { no_cuda("VRAM statistics"); }
void reset_device_memory_peak(DeviceId) { no_cuda("VRAM statistics"); }
double raw_pinned_copy_seconds(DeviceId, int64_t, bool, int) { no_cuda("a pinned copy"); }

#endif

}  // namespace pipetrain
