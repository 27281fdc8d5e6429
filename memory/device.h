// A device, parsed once from its name into a kind and an index. Everything past the parsers (config
// files, stage maps, the command line) compares DeviceIds, never names; a name is only printed.
//
//   DeviceId gpu = parse_device("cuda:0");      // InputError for "tpu:0", "cuda:", "cuda:x"
//   gpu.name();                                 // "cuda:0"
//   gpu.has_own_memory();                       // true: a tensor reaches it through a copy
#pragma once

#include <string>

namespace pipetrain {

// kStandIn: a GPU's stand-in that computes on the CPU in memory of its own budget, with host
// copies where a GPU has DMA; it runs the GPU code paths (weight streaming) where there is no GPU.
enum class DeviceKind { kCpu, kCuda, kStandIn };

struct DeviceId {
  DeviceKind kind = DeviceKind::kCpu;
  int index = 0;  // cuda:N, standin:N; always 0 for the CPU

  static constexpr DeviceId cpu() { return {DeviceKind::kCpu, 0}; }
  static constexpr DeviceId cuda(int index) { return {DeviceKind::kCuda, index}; }
  static constexpr DeviceId stand_in(int index) { return {DeviceKind::kStandIn, index}; }

  // The host CPU: it computes on cores the runtime assigns to stages.
  bool is_cpu() const { return kind == DeviceKind::kCpu; }
  // Computes in memory of its own (VRAM), not in host RAM: tensors cross to and from it by copies,
  // staged through pinned host memory.
  bool has_own_memory() const;
  // "cpu", "cuda:0".
  std::string name() const;

  bool operator==(const DeviceId& o) const { return kind == o.kind && index == o.index; }
  bool operator!=(const DeviceId& o) const { return !(*this == o); }
  bool operator<(const DeviceId& o) const { return kind != o.kind ? kind < o.kind : index < o.index; }
};

// "cpu", "cuda:N" or "standin:N" (N a non-negative integer); InputError naming the text otherwise.
DeviceId parse_device(const std::string& name);

// True when a tensor going from `a` to `b` crosses between host memory and a device's own memory,
// so the host side stages it in pinned memory.
bool crosses_host_boundary(DeviceId a, DeviceId b);

}  // namespace pipetrain
