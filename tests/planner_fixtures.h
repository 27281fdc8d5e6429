// Small hardware and models for the planner tests, stated in full so the expected numbers can be
// worked out by hand.
#pragma once

#include "memory/device.h"
#include "memory/hardware.h"
#include "memory/model_config.h"

namespace pipetrain::testing {

constexpr int64_t kGiB = 1024LL * 1024 * 1024;
constexpr DeviceId kCpu = DeviceId::cpu();
constexpr DeviceId kGpu = DeviceId::cuda(0);

inline HardwareSpec cpu_gpu_box(int64_t ram = 16 * kGiB, int64_t vram = 4 * kGiB, int cores = 4) {
  HardwareSpec hw;
  hw.name = "test-box";
  hw.source = "test";
  DeviceSpec cpu;
  cpu.id = kCpu;
  cpu.memory_bytes = ram;
  cpu.safety_margin = 0.9;
  cpu.allocator_slack = 0.0;
  cpu.flops_per_s = 100e9;
  cpu.memory_bytes_per_s = 20e9;
  cpu.cores = cores;
  DeviceSpec gpu;
  gpu.id = kGpu;
  gpu.memory_bytes = vram;
  gpu.safety_margin = 0.9;
  gpu.allocator_slack = 0.0;
  gpu.flops_per_s = 2000e9;
  gpu.memory_bytes_per_s = 400e9;
  hw.devices = {cpu, gpu};
  hw.links = {{kCpu, kGpu, 10e9, 10e-6}, {kGpu, kCpu, 10e9, 10e-6}};
  hw.pinned_bytes = 2 * kGiB;
  return hw;
}

inline HardwareSpec cpu_only_box(int cores = 2) {
  HardwareSpec hw = cpu_gpu_box();
  hw.devices.pop_back();
  hw.links.clear();
  hw.devices[0].cores = cores;
  return hw;
}

inline ModelConfig small_model(int64_t layers = 4) {
  ModelConfig m;
  m.vocab_size = 256;
  m.hidden_dim = 64;
  m.num_layers = layers;
  m.num_heads = 4;
  m.intermediate_size = 256;
  m.seq_len = 32;
  return m;
}

}  // namespace pipetrain::testing
