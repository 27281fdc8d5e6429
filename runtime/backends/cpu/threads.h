// Who computes on the CPU, and with how many threads.
//
// LibTorch's intra-op pool and OpenBLAS's own pthreads multiply: with both at 2 on 2 cores a small
// GPT trained 2.3x slower than with 1 intra-op thread (DESIGN.md). OpenBLAS's count is process-wide,
// so pipetrain decides it explicitly instead of leaving it to luck.
//
//   ThreadChoice choice = choose_threads(train.intra_op_threads, train.blas_threads, usable_cores());
//   apply_threads(choice);
#pragma once

#include <string>

namespace pipetrain {

struct BlasInfo {
  std::string name;     // "OpenBLAS", "reference BLAS", or "unknown"
  std::string library;  // the file that provides sgemm_ in this process
  std::string config;   // OpenBLAS's own description (version, threading, core), if OpenBLAS
  bool can_set_threads = false;
  bool is_reference = false;
};

BlasInfo detect_blas();

// -1 when the BLAS has no thread control.
int blas_threads();
bool set_blas_threads(int threads);

struct ThreadChoice {
  int intra_op_threads = 1;
  int blas_threads = 1;
  std::string reason;  // why, in words, for doctor and the run's log
};

// 0 in a request means "choose". The choice for this machine, measured in benchmarks/README.md:
// one intra-op thread (LibTorch's pool on top of OpenBLAS's threads oversubscribes) and one BLAS
// thread per usable core.
ThreadChoice choose_threads(long requested_intra_op, long requested_blas, int usable_cores);

// Sets LibTorch's intra-op pool and OpenBLAS's thread count.
void apply_threads(const ThreadChoice& choice);
int intra_op_threads();

}  // namespace pipetrain
