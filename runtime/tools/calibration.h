// Is a profile still this machine? A measured hardware file (`pipetrain profile`) describes the
// machine as it was when profiled; other work on it since, another machine, or a changed BIOS
// setting make its times wrong by as much. `plan`, `bench` and `train` with such a file first
// measure the CPU's GEMM rate for a third of a second and compare it with the rate the profile
// recorded. More than 10% apart, they say so with both figures; with --rescale-profile they scale
// the profile's CPU times by the ratio (memory/hardware.h with_cpu_slower_by) instead.
//
//   const Calibration c = calibrate_cpu(hardware);       // only for hardware with measured times
//   if (c.stale()) std::fprintf(stderr, "%s\n", calibration_message(c, hardware.name, false).c_str());
#pragma once

#include <cmath>
#include <string>

#include "memory/hardware.h"

namespace pipetrain {

constexpr double kStaleProfileFraction = 0.10;

struct Calibration {
  double recorded_flops_per_s = 0.0;  // the CPU's GEMM rate on all cores, as the profile recorded it
  double measured_flops_per_s = 0.0;  // the same, measured now
  // measured / recorded - 1: negative when the machine is slower now.
  double change() const { return measured_flops_per_s / recorded_flops_per_s - 1.0; }
  bool stale() const { return std::abs(change()) > kStaleProfileFraction; }
  // What the profile's times should be multiplied by to describe the machine now.
  double time_scale() const { return recorded_flops_per_s / measured_flops_per_s; }
};

// Whether `hardware` is a profile worth checking: it carries measured layer times.
bool is_measured_profile(const HardwareSpec& hardware);

// Measures the CPU's GEMM rate on all its cores (about 0.3 s) against the hardware's.
Calibration calibrate_cpu(const HardwareSpec& hardware);

// The lines to print: both rates, the change, and what to do (or what was done, when rescaled).
std::string calibration_message(const Calibration& calibration, const std::string& hardware_name, bool rescaled);

}  // namespace pipetrain
