#include "runtime/backends/cpu/host_allocator.h"

#include <c10/core/CPUAllocator.h>
#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

namespace pipetrain {
namespace {

// Blocks from this size up are mapped and cached; below, malloc serves them well.
constexpr size_t kLargeBytes = 256 * 1024;
// Every block starts with a 64-byte header (keeping LibTorch's 64-byte alignment) that records how
// it was made, so the data pointer can double as the deleter's context, as raw_allocate() requires.
constexpr size_t kHeader = 64;

struct Header {
  uint64_t mapped_bytes;  // 0: from malloc
};

size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

// Sizes are rounded so that near-equal requests share blocks: to 64 KiB, or to 2 MiB above 32 MiB.
size_t block_bytes(size_t n) {
  const size_t with_header = n + kHeader;
  return with_header <= (size_t{32} << 20) ? round_up(with_header, size_t{64} << 10) : round_up(with_header, size_t{2} << 20);
}

struct Cache {
  std::mutex mutex;
  std::unordered_map<size_t, std::vector<void*>> free_blocks;  // by block size
  std::unordered_map<size_t, size_t> requested_since_end;      // requests per block size this step
  HostAllocatorStats stats;
};

Cache& cache() {
  static Cache* c = new Cache();  // never destroyed: tensors may be freed during static destruction
  return *c;
}

void unmap(void* base, size_t bytes) { munmap(base, bytes); }

void delete_block(void* data) {
  if (data == nullptr) return;
  char* base = static_cast<char*>(data) - kHeader;
  const size_t mapped = reinterpret_cast<Header*>(base)->mapped_bytes;
  if (mapped == 0) {
    std::free(base);
    return;
  }
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  c.free_blocks[mapped].push_back(base);
  c.stats.live_bytes -= static_cast<int64_t>(mapped);
  c.stats.cached_bytes += static_cast<int64_t>(mapped);
}

class CachingAllocator final : public c10::Allocator {
 public:
  // LibTorch 1.13's Allocator::allocate is const; from 2.3 it is not, and copy_data is a new pure
  // virtual. Declaring both forms (without `override`) and copy_data fits either: the one the
  // found LibTorch declares is the override.
  c10::DataPtr allocate(size_t n) const {  // NOLINT(modernize-use-override)
    void* data = allocate_data(n);
    return {data, data, &delete_block, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DataPtr allocate(size_t n) { return static_cast<const CachingAllocator*>(this)->allocate(n); }
  void copy_data(void* dest, const void* src, std::size_t count) const { std::memcpy(dest, src, count); }
  c10::DeleterFnPtr raw_deleter() const override { return &delete_block; }

 private:
  static void* allocate_data(size_t n) {
    if (n + kHeader < kLargeBytes) {
      void* base = nullptr;
      if (posix_memalign(&base, kHeader, n + kHeader) != 0) throw std::bad_alloc();
      reinterpret_cast<Header*>(base)->mapped_bytes = 0;
      return static_cast<char*>(base) + kHeader;
    }
    const size_t bytes = block_bytes(n);
    Cache& c = cache();
    {
      std::lock_guard<std::mutex> lock(c.mutex);
      auto it = c.free_blocks.find(bytes);
      if (it != c.free_blocks.end() && !it->second.empty()) {
        void* base = it->second.back();
        it->second.pop_back();
        ++c.requested_since_end[bytes];
        ++c.stats.reuses;
        c.stats.cached_bytes -= static_cast<int64_t>(bytes);
        c.stats.live_bytes += static_cast<int64_t>(bytes);
        return static_cast<char*>(base) + kHeader;
      }
    }
    void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) {
      release_and_retry(bytes);
      base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (base == MAP_FAILED) throw std::bad_alloc();
    }
    reinterpret_cast<Header*>(base)->mapped_bytes = bytes;
    std::lock_guard<std::mutex> lock(c.mutex);
    ++c.requested_since_end[bytes];
    ++c.stats.maps;
    c.stats.live_bytes += static_cast<int64_t>(bytes);
    c.stats.mapped_bytes = c.stats.live_bytes + c.stats.cached_bytes;
    if (c.stats.mapped_bytes > c.stats.peak_mapped_bytes) c.stats.peak_mapped_bytes = c.stats.mapped_bytes;
    return static_cast<char*>(base) + kHeader;
  }

  // Out of address space or memory: give back every cached block, then try once more.
  static void release_and_retry(size_t) { HostCachingAllocator::release_cached(); }
};

bool g_installed = false;

}  // namespace

void HostCachingAllocator::install() {
  static std::once_flag once;
  std::call_once(once, [] {
    static CachingAllocator allocator;
    c10::SetCPUAllocator(&allocator, /*priority=*/50);
    g_installed = true;
  });
}

bool HostCachingAllocator::installed() { return g_installed; }

void HostCachingAllocator::end_step() {
  if (!g_installed) return;
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  // Per size, keep at most as many cached blocks as the step requested of that size: a size the step
  // never asked for belongs to another phase (validation, a first step) and goes back to the OS.
  for (auto& [bytes, blocks] : c.free_blocks) {
    const auto used = c.requested_since_end.find(bytes);
    const size_t keep = used == c.requested_since_end.end() ? 0 : used->second;
    while (blocks.size() > keep) {
      unmap(blocks.back(), bytes);
      blocks.pop_back();
      c.stats.cached_bytes -= static_cast<int64_t>(bytes);
    }
  }
  c.requested_since_end.clear();
  c.stats.mapped_bytes = c.stats.live_bytes + c.stats.cached_bytes;
}

void HostCachingAllocator::release_cached() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  for (auto& [bytes, blocks] : c.free_blocks) {
    for (void* base : blocks) unmap(base, bytes);
    c.stats.cached_bytes -= static_cast<int64_t>(bytes * blocks.size());
    blocks.clear();
  }
  c.stats.mapped_bytes = c.stats.live_bytes + c.stats.cached_bytes;
}

HostAllocatorStats HostCachingAllocator::stats() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  HostAllocatorStats s = c.stats;
  s.mapped_bytes = s.live_bytes + s.cached_bytes;
  return s;
}

}  // namespace pipetrain
