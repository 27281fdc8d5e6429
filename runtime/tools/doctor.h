// `pipetrain doctor`: what this machine and this build can do, and the traps it falls into.
//
//   DoctorReport report = examine_machine(choose_threads(0, 0, usable_cores()));
//   print_report(report, stdout);
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "memory/hardware.h"
#include "memory/machine_probe.h"
#include "runtime/backends/cpu/threads.h"

namespace pipetrain {

struct GpuInfo {
  std::string name;
  int64_t memory_bytes = -1;  // -1 when unknown
};

struct DoctorReport {
  std::string libtorch_version;
  bool libtorch_has_cuda = false;
  int cuda_devices = 0;             // as LibTorch sees them
  std::vector<GpuInfo> gpus;        // as the driver sees them (independent of LibTorch)
  BlasInfo blas;
  double matmul_gflops = 0.0;       // 1024^3 float32 matmuls for about a second
  double triad_gb_per_s = 0.0;      // STREAM's triad over the usable cores (memory-bound work's ceiling)
  CpuCalibration calibration;       // profile's calibration workload: all cores, alone on each core
  int usable_cores = 0;
  ThreadChoice threads;
  int blas_threads_in_effect = -1;
  int intra_op_threads_in_effect = 0;
  MachineMemory memory;
  std::vector<std::string> warnings;
};

// Applies `threads`, then probes and measures (about one second).
DoctorReport examine_machine(const ThreadChoice& threads);

// Float32 1024^3 matmuls under `threads` for about `seconds`; returns GFLOP/s. Leaves `threads` applied.
double measure_matmul_gflops(const ThreadChoice& threads, double seconds);

// The GPUs the NVIDIA driver exposes, read from /proc/driver/nvidia and nvidia-smi when present.
std::vector<GpuInfo> probe_driver_gpus();

void print_report(const DoctorReport& report, std::FILE* out);

}  // namespace pipetrain
