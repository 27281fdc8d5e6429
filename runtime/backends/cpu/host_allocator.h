// LibTorch's CPU tensors from a caching allocator, so resident memory follows what training holds.
//
// With glibc's malloc, a trainer's resident memory ran 1.4-2.4x above the plan (bench_pipeline): each
// worker thread gets its own malloc arena and keeps its own peak, and freed blocks are not returned.
// Returning every large block to the OS instead (a fixed mmap threshold) made RSS follow the plan
// within 10%, but cost half the throughput in page faults. This allocator does what PyTorch's
// CUDA caching allocator does on the GPU: large blocks come from mmap, a freed block waits in a free
// list keyed by its size and is handed to the next request of that size, so a training step, which
// requests the same sizes every time, reuses its blocks without faulting. At each step boundary,
// cached blocks of a size the step did not request (or more of them than it requested) go back to
// the OS, so memory left over from another phase (validation, a first step) does not linger. Small
// blocks go to malloc.
//
//   HostCachingAllocator::install();   // first thing in main, before any tensor exists
//   ... each step ...
//   HostCachingAllocator::end_step();  // release blocks the step did not reuse
#pragma once

#include <cstdint>

namespace pipetrain {

struct HostAllocatorStats {
  int64_t live_bytes = 0;    // handed out and not yet freed (large blocks)
  int64_t cached_bytes = 0;  // freed, mapped, waiting for reuse
  int64_t mapped_bytes = 0;  // live + cached
  int64_t peak_mapped_bytes = 0;
  int64_t maps = 0;          // mmap calls so far (each faults its pages in once)
  int64_t reuses = 0;        // requests served from the cache
};

struct HostCachingAllocator {
  // Installs it as LibTorch's CPU allocator; later calls do nothing. Tensors made before keep theirs.
  static void install();
  static bool installed();
  // A step ended: unmaps cached blocks beyond what the step requested, per size.
  static void end_step();
  // Unmaps every cached block.
  static void release_cached();
  static HostAllocatorStats stats();
};

}  // namespace pipetrain
