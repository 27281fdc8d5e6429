// Counts every byte LibTorch allocates on the CPU, so memory estimates can be checked against the
// real thing (RSS is too coarse: the C library keeps freed memory, pages arrive lazily).
//
// install() wraps LibTorch's CPU allocator once per process; afterwards every new CPU tensor's
// storage is counted until freed. Storage allocated before install() is not counted.
//
//   CpuAllocCounter::install();
//   const int64_t base = CpuAllocCounter::current_bytes();
//   CpuAllocCounter::reset_peak();
//   ... forward, backward ...
//   const int64_t peak = CpuAllocCounter::peak_bytes() - base;
#pragma once

#include <cstdint>

namespace pipetrain {

struct CpuAllocCounter {
  static void install();
  static int64_t current_bytes();
  static int64_t peak_bytes();
  static void reset_peak();  // peak := current
};

}  // namespace pipetrain
