// The GPU's memory: a cap on the caching allocator, its statistics, and the raw-copy baseline.
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <set>

#include "runtime/backends/cuda/cuda_backend.h"
#include "runtime/backends/cuda/cuda_util.h"

namespace pipetrain::cuda_backend {
namespace {

std::mutex caps_mutex;
std::map<int, int64_t> caps;  // device index -> cap in force

// The caching allocator exists once LibTorch has initialised CUDA on the device; one allocation does that.
// Once per device: the memory guard asks for statistics every step.
void ensure_initialised(torch::Device device) {
  static std::mutex mutex;
  static std::set<int> done;
  std::lock_guard<std::mutex> lock(mutex);
  if (done.insert(device.index()).second) (void)torch::empty({1}, torch::TensorOptions().device(device));
}

int64_t total_memory(torch::Device device) {
  c10::cuda::CUDAGuard guard(device.index());
  size_t free_bytes = 0, total_bytes = 0;
  check(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
  return static_cast<int64_t>(total_bytes);
}

}  // namespace

int64_t cap_memory(torch::Device device, int64_t bytes) {
  ensure_initialised(device);
  const int64_t total = total_memory(device);
  // Cached blocks count against the cap: give back what no tensor uses, so the cap and the peak
  // statistics start from what is really held.
  c10::cuda::CUDACachingAllocator::emptyCache();
  std::lock_guard<std::mutex> lock(caps_mutex);
  if (bytes <= 0 || bytes >= total) {
    c10::cuda::CUDACachingAllocator::setMemoryFraction(1.0, device.index());
    caps.erase(device.index());
    return 0;
  }
  c10::cuda::CUDACachingAllocator::setMemoryFraction(static_cast<double>(bytes) / static_cast<double>(total), device.index());
  caps[device.index()] = bytes;
  return bytes;
}

DeviceMemoryReport device_memory_report(torch::Device device) {
  ensure_initialised(device);
  DeviceMemoryReport r;
  r.total_bytes = total_memory(device);
  {
    std::lock_guard<std::mutex> lock(caps_mutex);
    const auto it = caps.find(device.index());
    r.cap_bytes = it == caps.end() ? 0 : it->second;
  }
  // Index 0 of each statistic array is the aggregate over the allocator's pools.
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
  r.peak_allocated_bytes = stats.allocated_bytes[0].peak;
  r.peak_reserved_bytes = stats.reserved_bytes[0].peak;
  r.reserved_bytes = stats.reserved_bytes[0].current;
  return r;
}

void reset_device_memory_peak(torch::Device device) {
  ensure_initialised(device);
  c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
}

double raw_pinned_copy_seconds(torch::Device device, int64_t bytes, bool host_to_device, int reps) {
  if (bytes < 1 || reps < 1) {
    throw std::invalid_argument("raw_pinned_copy_seconds needs bytes >= 1 and reps >= 1 (got " + std::to_string(bytes) +
                                ", " + std::to_string(reps) + ")");
  }
  c10::cuda::CUDAGuard guard(device.index());
  PinnedBuffer host(bytes);
  torch::Tensor gpu = torch::empty({bytes}, torch::TensorOptions().dtype(torch::kUInt8).device(device));
  const c10::cuda::CUDAStream stream = c10::cuda::getStreamFromPool(/*isHighPriority=*/true, device.index());
  std::vector<Event> begin(static_cast<size_t>(reps)), end(static_cast<size_t>(reps));
  auto copy = [&] {
    if (host_to_device) {
      check(cudaMemcpyAsync(gpu.data_ptr(), host.data(), static_cast<size_t>(bytes), cudaMemcpyHostToDevice, stream.stream()),
            "cudaMemcpyAsync");
    } else {
      check(cudaMemcpyAsync(host.data(), gpu.data_ptr(), static_cast<size_t>(bytes), cudaMemcpyDeviceToHost, stream.stream()),
            "cudaMemcpyAsync");
    }
  };
  copy();  // warm-up
  for (int i = 0; i < reps; ++i) {
    begin[static_cast<size_t>(i)].record(stream.stream());
    copy();
    end[static_cast<size_t>(i)].record(stream.stream());
  }
  stream.synchronize();
  std::vector<double> seconds;
  for (int i = 0; i < reps; ++i) seconds.push_back(end[static_cast<size_t>(i)].milliseconds_since(begin[static_cast<size_t>(i)]) / 1e3);
  std::sort(seconds.begin(), seconds.end());
  return seconds[seconds.size() / 2];
}

}  // namespace pipetrain::cuda_backend
