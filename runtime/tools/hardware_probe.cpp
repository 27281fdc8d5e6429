// The probed side of hardware descriptions: this machine's RAM, cores, GPUs and measured GEMM rates.
// (Parsing lives in hardware_config.cpp, which needs no LibTorch, so the parsers can be fuzzed alone.)
#include "runtime/tools/hardware_probe.h"

#include <algorithm>

#include "memory/machine_probe.h"
#include "runtime/backends/cpu/memory_bandwidth.h"
#include "runtime/tools/doctor.h"
#include "runtime/config/hardware_file.h"

namespace pipetrain {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

}  // namespace

HardwareSpec probe_this_machine() {
  HardwareSpec hw;
  hw.name = "this-machine";
  hw.source = "probed";
  const MachineMemory mem = probe_machine_memory();
  DeviceSpec cpu;
  cpu.id = DeviceId::cpu();
  cpu.memory_bytes = mem.ram_total_bytes;
  if (mem.cgroup_limit_bytes > 0 && mem.cgroup_limit_bytes < cpu.memory_bytes) cpu.memory_bytes = mem.cgroup_limit_bytes;
  cpu.safety_margin = 0.9;
  cpu.reserved_bytes = static_cast<int64_t>(0.5 * kGiB);  // LibTorch runtime and OpenBLAS buffers
  cpu.cores = usable_cores();
  // The triad first: after a matmul, OpenBLAS's idle threads spin for a while and take cores.
  cpu.memory_bytes_per_s = measure_triad_bytes_per_s(cpu.cores, 0.3);
  const ThreadChoice all = choose_threads(1, cpu.cores, cpu.cores);
  cpu.flops_per_s = measure_matmul_gflops(all, 0.5) * 1e9;
  cpu.single_core_flops_per_s = std::min(cpu.flops_per_s, measure_matmul_gflops(choose_threads(1, 1, 1), 0.5) * 1e9);
  apply_threads(choose_threads(0, 0, cpu.cores));
  hw.devices.push_back(cpu);
  int index = 0;
  for (const GpuInfo& gpu : probe_driver_gpus()) {
    if (gpu.memory_bytes <= 0) continue;
    DeviceSpec dev;
    dev.id = DeviceId::cuda(index++);
    dev.memory_bytes = gpu.memory_bytes;
    dev.safety_margin = 0.95;
    dev.reserved_bytes = static_cast<int64_t>(0.6 * kGiB);
    dev.allocator_slack = 0.10;
    dev.flops_per_s = 10e12;  // unknown until profiled: a mid-range GPU's sustained FP32 rate
    dev.memory_bytes_per_s = 300e9;  // likewise: a mid-range GPU's sustained memory bandwidth
    hw.devices.push_back(dev);
    hw.links.push_back({DeviceId::cpu(), dev.id, 12e9, 20e-6});
    hw.links.push_back({dev.id, DeviceId::cpu(), 12e9, 20e-6});
  }
  hw.pinned_bytes = cpu.memory_bytes / 4;
  validate_hardware(hw);
  return hw;
}

HardwareSpec load_hardware(const std::string& name_or_path) {
  if (name_or_path == "this-machine") return probe_this_machine();
  return load_hardware_file_or_preset(name_or_path);
}

}  // namespace pipetrain
