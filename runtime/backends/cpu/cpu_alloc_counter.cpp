#include "runtime/backends/cpu/cpu_alloc_counter.h"

#include <c10/core/CPUAllocator.h>

#include <atomic>
#include <cstring>
#include <mutex>

namespace pipetrain {
namespace {

std::atomic<int64_t> g_current{0};
std::atomic<int64_t> g_peak{0};

// Each block carries its size in a 64-byte header (keeping LibTorch's 64-byte alignment), so the
// data pointer can double as the deleter's context, as raw_allocate() requires.
constexpr size_t kHeader = 64;
c10::DeleterFnPtr g_wrapped_deleter = nullptr;

void delete_counted(void* data) {
  if (data == nullptr) return;
  char* base = static_cast<char*>(data) - kHeader;
  g_current.fetch_sub(*reinterpret_cast<int64_t*>(base), std::memory_order_relaxed);
  g_wrapped_deleter(base);
}

class CountingAllocator final : public c10::Allocator {
 public:
  explicit CountingAllocator(c10::Allocator* wrapped) : wrapped_(wrapped) {}

  // LibTorch 1.13's Allocator::allocate is const; from 2.3 it is not, and copy_data is a new pure
  // virtual. Declaring both forms (without `override`) and copy_data fits either: the one the
  // found LibTorch declares is the override.
  c10::DataPtr allocate(size_t n) const {  // NOLINT(modernize-use-override)
    char* base = static_cast<char*>(wrapped_->raw_allocate(n + kHeader));
    *reinterpret_cast<int64_t*>(base) = static_cast<int64_t>(n);
    const int64_t now = g_current.fetch_add(static_cast<int64_t>(n), std::memory_order_relaxed) + static_cast<int64_t>(n);
    int64_t peak = g_peak.load(std::memory_order_relaxed);
    while (now > peak && !g_peak.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
    }
    void* data = base + kHeader;
    return {data, data, &delete_counted, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DataPtr allocate(size_t n) { return static_cast<const CountingAllocator*>(this)->allocate(n); }
  void copy_data(void* dest, const void* src, std::size_t count) const { std::memcpy(dest, src, count); }
  c10::DeleterFnPtr raw_deleter() const override { return &delete_counted; }

 private:
  c10::Allocator* wrapped_;
};

}  // namespace

void CpuAllocCounter::install() {
  static std::once_flag once;
  std::call_once(once, [] {
    c10::Allocator* wrapped = c10::GetCPUAllocator();
    g_wrapped_deleter = wrapped->raw_deleter();
    static CountingAllocator allocator(wrapped);
    c10::SetCPUAllocator(&allocator, /*priority=*/100);
  });
}

int64_t CpuAllocCounter::current_bytes() { return g_current.load(); }
int64_t CpuAllocCounter::peak_bytes() { return g_peak.load(); }
void CpuAllocCounter::reset_peak() { g_peak.store(g_current.load()); }

}  // namespace pipetrain
