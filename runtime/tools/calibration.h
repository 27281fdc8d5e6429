// Is a profile still this machine? A measured hardware file (`pipetrain profile`) describes the
// machine as it was when profiled; other work on it since, another machine, or a changed BIOS
// setting make its times wrong by as much. `plan`, `bench` and `train` with such a file first
// measure this machine again (under a second) and compare it with what the profile recorded:
//  - the profile's calibration workload (memory/hardware.h CpuCalibration: one block's forward and
//    backward at a fixed shape, on all cores and alone on each core), when the profile has one. A
//    training step's speed moves with its memory-bound half too, which a GEMM hardly sees: on the
//    development box the step moved 15% while the GEMM rate moved 1% (benchmarks/README.md);
//  - the CPU's GEMM rate, in every profile (the only figure in those written before the workload).
// More than 10% apart, they say so with both figures; with --rescale-profile they scale the
// profile's CPU times by the ratio (memory/hardware.h with_cpu_slower_by) instead. When this
// machine's cores run the one-core workload more than 10% apart, they say that too: a one-core
// stage's time then depends on which core it gets, and the profile's one-core times average them.
// When one core's repetitions of it differ by more than 10%, the machine is unsteady (another
// virtual machine's work on the same physical cores: the development box's one-core times jump
// between two levels 1.5x apart within seconds), and they say that no prediction is closer.
//
//   const Calibration c = calibrate_cpu(hardware);       // only for hardware with measured times
//   if (c.stale()) std::fprintf(stderr, "%s\n", calibration_message(c, hardware.name, false).c_str());
//   if (c.cores_differ()) std::fprintf(stderr, "%s\n", cores_message(c).c_str());
//   if (c.unsteady()) std::fprintf(stderr, "%s\n", unsteadiness_message(c.measured).c_str());
#pragma once

#include <cmath>
#include <string>

#include "memory/hardware.h"

namespace pipetrain {

constexpr double kStaleProfileFraction = 0.10;
constexpr double kCoresDifferFraction = 0.10;
constexpr double kUnsteadyFraction = 0.10;
// How long calibrate_cpu spends on the workload (the GEMM takes another 0.3 s).
constexpr double kCheckCalibrationSeconds = 0.6;

struct Calibration {
  double recorded_flops_per_s = 0.0;  // the CPU's GEMM rate on all cores, as the profile recorded it
  double measured_flops_per_s = 0.0;  // the same, measured now
  CpuCalibration recorded;            // the workload's times as the profile recorded them (may be empty)
  CpuCalibration measured;            // the same, now (empty when the profile has none)

  // Whether the workload is what compares: the profile recorded it.
  bool by_workload() const { return recorded.measured() && measured.measured(); }
  // The machine's speed now over the profile's, minus 1: negative when it is slower now. By the
  // workload on all cores when there is one, else by the GEMM rate.
  double change() const {
    return by_workload() ? recorded.all_cores_seconds / measured.all_cores_seconds - 1.0
                         : measured_flops_per_s / recorded_flops_per_s - 1.0;
  }
  double gemm_change() const { return measured_flops_per_s / recorded_flops_per_s - 1.0; }
  bool stale() const { return std::abs(change()) > kStaleProfileFraction; }
  // What the profile's times should be multiplied by to describe the machine now.
  double time_scale() const { return 1.0 / (1.0 + change()); }
  bool cores_differ() const { return measured.core_spread() > kCoresDifferFraction; }
  bool unsteady() const { return measured.unsteadiness > kUnsteadyFraction; }
};

// Whether `hardware` is a profile worth checking: it carries measured layer times.
bool is_measured_profile(const HardwareSpec& hardware);

// Measures the CPU's GEMM rate on all its cores (about 0.3 s) and, when the profile recorded it,
// the calibration workload (kCheckCalibrationSeconds), against the hardware's.
Calibration calibrate_cpu(const HardwareSpec& hardware);

// The lines to print: both figures, the change, and what to do (or what was done, when rescaled).
std::string calibration_message(const Calibration& calibration, const std::string& hardware_name, bool rescaled);

// "core 0 40.1 ms, core 1 33.0 ms": the workload alone on each core.
std::string core_times(const CpuCalibration& calibration);

// Says that this machine's cores run the workload at different speeds now, with their times (and
// the profile's, when it recorded them), and what that does to one-core stages' predictions.
std::string cores_message(const Calibration& calibration);

// Says that the same one-core work took from one time to another within the calibration: what a
// prediction cannot be closer than. Empty when it was steady (within kUnsteadyFraction).
std::string unsteadiness_message(const CpuCalibration& measured);

}  // namespace pipetrain
