// This machine's sustained memory bandwidth, measured as STREAM measures it (McCalpin's triad,
// a[i] = b[i] + s * c[i], over arrays far larger than the caches): what memory-bound work such as
// the optimizer step and the gradient norm can reach. `pipetrain profile` writes it into the
// hardware file; the fused CPU AdamW's benchmark compares against it. Measure it before any
// LibTorch or OpenBLAS work in the process: their idle threads spin for a while after each op and
// take cores from the triad (measured here: 2 threads gave 34 GB/s after a matmul, 55 before).
//
//   double bytes_per_s = measure_triad_bytes_per_s(/*threads=*/2, /*seconds=*/0.3);
#pragma once

#include <cstdint>

namespace pipetrain {

// Median over repetitions of 3 x 4 bytes per element (two arrays read, one written) over the time
// of one triad pass, with `threads` threads (each pinned to its own usable core) on arrays of
// `elements` floats each (default 16 Mi: 3 x 64 MiB).
double measure_triad_bytes_per_s(int threads, double seconds, int64_t elements = int64_t{16} << 20);

}  // namespace pipetrain
