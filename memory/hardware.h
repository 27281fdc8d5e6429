// The machine as the planner sees it: devices with memory budgets and speeds, links between them.
//
// Presets live in configs/hardware/*.yaml (parsed at the edge, runtime/config/hardware_file.cpp);
// `this-machine` is probed. Every number a preset states carries its source in a comment there.
//
//   HardwareSpec hw = ...;
//   const DeviceSpec& gpu = hw.device(DeviceId::cuda(0));
//   double seconds = flops / hw.cpu().flops_per_s_with(cores);
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "memory/device.h"
#include "memory/model_config.h"  // Dtype

namespace pipetrain {

struct DeviceSpec {
  DeviceId id;
  int64_t memory_bytes = 0;    // RAM or VRAM (swap is never counted)
  double safety_margin = 0.9;  // usable fraction of memory_bytes
  int64_t reserved_bytes = 0;  // taken before training starts: runtime, CUDA context
  double allocator_slack = 0.05;  // fragmentation, as a fraction of what the stages allocate
  double flops_per_s = 0.0;    // sustained FP32 rate on training GEMMs (all cores, for the CPU)
  double single_core_flops_per_s = 0.0;  // CPU only; 0 = flops_per_s / cores (perfect scaling)
  // Sustained rates of the other dtypes the device computes in (float16 on a GPU's tensor cores,
  // say); a dtype without one is rated at float32's (flops_source says so).
  std::map<Dtype, double> flops_per_s_by_dtype;
  double memory_bytes_per_s = 0.0;  // sustained memory bandwidth (a STREAM-style triad): what the
                                    // optimizer and the gradient norm are charged against
  int cores = 0;               // CPU only

  std::string name() const { return id.name(); }
  int64_t usable_bytes() const { return static_cast<int64_t>(static_cast<double>(memory_bytes) * safety_margin); }
  // What a GPU's caching allocator may hold: the card's memory less what the CUDA context and the
  // runtime take before it (reserved_bytes), as on a real card of memory_bytes. The cap a run puts
  // on the allocator (runtime/train/pipeline_trainer.cpp), so --vram-cap-gib N is as strict as an
  // N GiB card.
  int64_t allocator_bytes() const { return memory_bytes - reserved_bytes; }
  // The CPU's rate on `n` of its cores: single_core_flops_per_s at 1, flops_per_s at all cores,
  // linear in between (two single-thread GEMMs on the two cores here ran 26.6 + 28.2 GFLOP/s
  // against 52.6 for one two-thread GEMM, DESIGN.md: scaling is nearly, not quite, perfect).
  double flops_per_s_with(int n) const;
  // The rate of `dtype` on `n` cores: its own figure, scaled like float32's across cores on a CPU.
  double flops_per_s_for(Dtype dtype, int n) const;
  // "float16: 2.0e13 FLOP/s" or "bfloat16: float32's rate (no bfloat16 figure)".
  std::string flops_source(Dtype dtype) const;
};

// One direction of a transfer path, e.g. cpu -> cuda:0 (H2D) over PCIe.
struct LinkSpec {
  DeviceId from;
  DeviceId to;
  double bytes_per_s = 0.0;
  double latency_s = 0.0;
};

// Per-layer times measured on this machine (pipetrain profile) for one model and micro-batch size:
// one entry per device and core count a stage may compute with. The planner sums them over a
// stage's layers instead of dividing FLOPs by a rate.
struct LayerTimes {
  DeviceId device;
  int cores = 0;       // CPU: the cores the stage computes with; 0 for a GPU
  std::vector<double> forward_seconds;    // per layer of the layer list, one micro-batch
  std::vector<double> backward_seconds;   // per layer, one micro-batch (no recomputation)
  std::vector<double> optimizer_seconds;  // per layer, one optimizer step over its parameters
  // How far apart the profile's rounds put the whole model's time, over their median (0: one round
  // or perfect agreement), and how many rounds it took (ProfileOptions).
  double spread = 0.0;
  int rounds = 1;
  // CPU entries of fewer cores than the CPU has are measured beside copies on the other cores, as
  // pipeline stages run; alone_ratio is the whole model's forward and backward time with the other
  // cores idle over that (below 1 when neighbours slow it: shared caches and memory bandwidth, or
  // sibling hardware threads). The simulator charges a stage between the two by how much of its
  // time other CPU stages compute (simulate_with_neighbours). 1: not measured, or the whole CPU.
  double alone_ratio = 1.0;
};

// A fixed training-like workload (one transformer block's forward and backward at one small shape,
// whatever the profiled model; runtime/tools/calibration.h) timed when the profile was taken: on
// all cores as a stage on the whole CPU computes, and alone on each core as a one-core stage does.
// Timed again later, it says whether the machine still runs as profiled, and whether its cores run
// at one speed (a one-core entry averages them). Empty in profiles written before it existed.
struct CpuCalibration {
  double all_cores_seconds = 0.0;
  std::vector<double> core_seconds;  // per logical core 0, 1, ...
  // The widest (slowest - fastest) / median of one core's repetitions: how unsteady the machine was
  // while measured (another virtual machine's work on the same physical core shows here). Not
  // written to hardware files: it describes the moment.
  double unsteadiness = 0.0;
  bool measured() const { return all_cores_seconds > 0.0; }
  // How far apart the cores' times are: slowest / fastest - 1 (0 with fewer than two).
  double core_spread() const;
};

struct MeasuredTimes {
  std::string model_key;  // profile_key() of the model and micro-batch size they were measured for
  std::vector<LayerTimes> entries;
  CpuCalibration calibration;
  // nullptr when there is no entry for that device and core count.
  const LayerTimes* find(DeviceId device, int cores) const;
};

// Between two machines of a run (stages on several hosts, replicas): each host's network interface,
// as a copy engine of its own each way. Not described (0): cross-host copies and gradient sums are
// not charged, and the plan says so.
struct NetworkSpec {
  double bytes_per_s = 0.0;
  double latency_s = 0.0;
  bool described() const { return bytes_per_s > 0.0; }
};

struct HardwareSpec {
  std::string name;
  std::string source;  // where it came from: a preset file, or "probed"
  std::vector<DeviceSpec> devices;
  std::vector<LinkSpec> links;
  NetworkSpec network;       // to the run's other machines, each a copy of this hardware
  int64_t pinned_bytes = 0;  // page-locked host memory the OS lets us have (WSL2 limits it)
  MeasuredTimes measured;    // empty unless loaded from a profile

  bool has_device(DeviceId id) const;
  // Throws InputError listing the known devices when `id` is not one of them.
  const DeviceSpec& device(DeviceId id) const;
  // The host CPU (validate_hardware requires exactly one).
  const DeviceSpec& cpu() const { return device(DeviceId::cpu()); }
  // nullptr when the hardware has no link between the two devices.
  const LinkSpec* link(DeviceId from, DeviceId to) const;
  const DeviceSpec* first_gpu() const;
  // This hardware with standin:N beside each cuda:N: the same budget, rates and links, so a plan
  // on the stand-in is the GPU's plan (memory/device.h).
  HardwareSpec with_stand_ins() const;
  std::string device_names() const;  // "cpu, cuda:0"
};

// Checks the fields (positive memory, margins in (0, 1], links between known devices); throws
// InputError naming the field and value.
void validate_hardware(const HardwareSpec& hardware);

// The CPU as if it were `time_scale` times slower than when it was described: its measured layer
// times multiplied by time_scale, its rates divided by it (a profile rescaled to a machine that has
// changed since; runtime/tools/calibration.h).
HardwareSpec with_cpu_slower_by(HardwareSpec hardware, double time_scale);

}  // namespace pipetrain
