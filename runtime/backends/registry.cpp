#include "runtime/backends/registry.h"

#include <torch/cuda.h>
#include <torch/version.h>

#include <cstdlib>

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

StageMap place_stages(const StageMap& map, bool gpu_stages_on_cpu, std::vector<std::string>* warnings) {
  StageMap placed = map;
  const int gpus = cuda_device_count();
  for (size_t s = 0; s < placed.stages.size(); ++s) {
    StageSpec& st = placed.stages[s];
    if (st.device == "cpu") continue;
    int index = -1;
    if (st.device.rfind("cuda:", 0) == 0) {
      try {
        size_t used = 0;
        index = std::stoi(st.device.substr(5), &used);
        if (used != st.device.size() - 5) index = -1;
      } catch (const std::exception&) {
        index = -1;
      }
    }
    if (index < 0) throw InputError("stage " + std::to_string(s) + " names device '" + st.device + "'; devices are cpu and cuda:N");
    if (index < gpus) continue;
    const std::string why = gpus == 0 ? "this pipetrain has no usable CUDA (" + torch_build_description() + ")"
                                      : "this machine has " + std::to_string(gpus) + " GPU(s)";
    if (!gpu_stages_on_cpu) {
      throw InputError("stage " + std::to_string(s) + " is placed on " + st.device + ", but " + why +
                       "; place it on cpu, or pass --gpu-stages-on-cpu to run GPU stages on the CPU");
    }
    if (warnings != nullptr) {
      warnings->push_back("stage " + std::to_string(s) + " was placed on " + st.device + ", but " + why +
                          ": it runs on the CPU (--gpu-stages-on-cpu), sharing the CPU stages' pool of cores");
    }
    st.device = "cpu";
    st.cores = 0;
  }
  return placed;
}

std::vector<std::vector<std::string>> runnable_shapes(const HardwareSpec& hardware) {
  const int gpus = cuda_device_count();
  std::vector<std::vector<std::string>> shapes;
  for (const auto& shape : default_shapes(hardware)) {
    bool runnable = true;
    for (const std::string& device : shape) {
      if (device != "cpu" && (device.rfind("cuda:", 0) != 0 || std::atoi(device.c_str() + 5) >= gpus)) runnable = false;
    }
    if (runnable) shapes.push_back(shape);
  }
  return shapes;
}

torch::Device torch_device(const std::string& name) { return torch::Device(name); }

#if PIPETRAIN_WITH_CUDA

bool built_with_cuda() { return true; }

std::unique_ptr<StageDevice> make_stage_device(torch::Device device, int micro_batches) {
  if (device.is_cuda()) return cuda_backend::make_stage_device(device, micro_batches);
  return std::make_unique<StageDevice>();
}

std::unique_ptr<Transfer> make_transfer(torch::Device from, torch::Device to, const RingSpec& ring, StageDevice* producer,
                                        EventKind produced_by) {
  if (from == to) return std::make_unique<HandOff>();
  if (from.is_cpu() != to.is_cpu()) return cuda_backend::make_transfer(from, to, ring, producer, produced_by);
  return std::make_unique<DeviceCopy>(from, to);  // GPU to GPU: not a path this version plans
}

int64_t cap_device_memory(torch::Device device, int64_t bytes) { return cuda_backend::cap_memory(device, bytes); }
DeviceMemoryReport device_memory_report(torch::Device device) { return cuda_backend::device_memory_report(device); }
void reset_device_memory_peak(torch::Device device) { cuda_backend::reset_device_memory_peak(device); }
double raw_pinned_copy_seconds(torch::Device device, int64_t bytes, bool host_to_device, int reps) {
  return cuda_backend::raw_pinned_copy_seconds(device, bytes, host_to_device, reps);
}

#else  // a CPU-only LibTorch: every device is the CPU, or place_stages refused the map

namespace {
[[noreturn]] void no_cuda(const char* what) {
  throw std::runtime_error(std::string(what) + " needs CUDA, and this pipetrain was built without it (" +
                           torch_build_description() + ")");
}
}  // namespace

bool built_with_cuda() { return false; }

std::unique_ptr<StageDevice> make_stage_device(torch::Device device, int) {
  if (device.is_cuda()) no_cuda("a stage on cuda");
  return std::make_unique<StageDevice>();
}

std::unique_ptr<Transfer> make_transfer(torch::Device from, torch::Device to, const RingSpec&, StageDevice*, EventKind) {
  if (from == to) return std::make_unique<HandOff>();
  return std::make_unique<DeviceCopy>(from, to);
}

int64_t cap_device_memory(torch::Device, int64_t) { no_cuda("a VRAM cap"); }
DeviceMemoryReport device_memory_report(torch::Device) { no_cuda("VRAM statistics"); }
void reset_device_memory_peak(torch::Device) { no_cuda("VRAM statistics"); }
double raw_pinned_copy_seconds(torch::Device, int64_t, bool, int) { no_cuda("a pinned copy"); }

#endif

}  // namespace pipetrain
