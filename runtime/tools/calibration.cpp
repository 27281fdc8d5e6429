#include "runtime/tools/calibration.h"

#include <algorithm>
#include <cstdio>

#include "memory/machine_probe.h"
#include "runtime/backends/cpu/threads.h"
#include "runtime/tools/doctor.h"
#include "runtime/tools/profile.h"

namespace pipetrain {

bool is_measured_profile(const HardwareSpec& hardware) { return !hardware.measured.entries.empty(); }

Calibration calibrate_cpu(const HardwareSpec& hardware) {
  const DeviceSpec& cpu = hardware.cpu();
  const int cores = std::min(cpu.cores, usable_cores());
  Calibration c;
  c.recorded_flops_per_s = cpu.flops_per_s;
  c.recorded = hardware.measured.calibration;
  // The workload before the GEMM, whose idle OpenBLAS threads spin for a while afterwards.
  if (c.recorded.measured()) c.measured = measure_cpu_calibration(cores, kCheckCalibrationSeconds);
  c.measured_flops_per_s = measure_matmul_gflops(choose_threads(1, cores, cores), 0.3) * 1e9;
  apply_threads(choose_threads(0, 0, cores));
  return c;
}

std::string calibration_message(const Calibration& c, const std::string& hardware_name, bool rescaled) {
  char text[1000];
  if (c.by_workload()) {
    std::snprintf(text, sizeof(text),
                  "calibration: a training block (forward and backward, fixed shape) takes %.2f ms on all cores now; "
                  "profile '%s' recorded %.2f ms (speed %+.0f%%; the GEMM rate %.1f GFLOP/s against %.1f, %+.0f%%). Its "
                  "measured times describe the machine as it was, so predictions are off by about as much",
                  c.measured.all_cores_seconds * 1e3, hardware_name.c_str(), c.recorded.all_cores_seconds * 1e3,
                  100.0 * c.change(), c.measured_flops_per_s / 1e9, c.recorded_flops_per_s / 1e9, 100.0 * c.gemm_change());
  } else {
    std::snprintf(text, sizeof(text),
                  "calibration: this machine multiplies at %.1f GFLOP/s on all cores now; profile '%s' recorded %.1f "
                  "(%+.0f%%). Its measured times describe the machine as it was, so predictions are off by about as much",
                  c.measured_flops_per_s / 1e9, hardware_name.c_str(), c.recorded_flops_per_s / 1e9, 100.0 * c.change());
  }
  std::string out = text;
  if (rescaled) {
    std::snprintf(text, sizeof(text), ": its CPU times were multiplied by %.2f (--rescale-profile)", c.time_scale());
  } else {
    std::snprintf(text, sizeof(text),
                  ". Re-run `pipetrain profile`, or add --rescale-profile to multiply its CPU times by %.2f", c.time_scale());
  }
  return out + text;
}

std::string core_times(const CpuCalibration& calibration) {
  std::string out;
  for (size_t i = 0; i < calibration.core_seconds.size(); ++i) {
    char text[64];
    std::snprintf(text, sizeof(text), "%score %zu %.2f ms", i == 0 ? "" : ", ", i, calibration.core_seconds[i] * 1e3);
    out += text;
  }
  return out;
}

std::string cores_message(const Calibration& c) {
  char text[400];
  std::snprintf(text, sizeof(text),
                "calibration: this machine's cores do not run at one speed now: a training block alone on one core takes "
                "%s (%.0f%% apart",
                core_times(c.measured).c_str(), 100.0 * c.measured.core_spread());
  std::string out = text;
  if (c.recorded.core_seconds.size() > 1) {
    std::snprintf(text, sizeof(text), "; when profiled: %s, %.0f%% apart", core_times(c.recorded).c_str(),
                  100.0 * c.recorded.core_spread());
    out += text;
  }
  return out +
         "). A one-core stage's time depends on which core it gets, and the profile's one-core times average the "
         "cores: predictions of splits with one-core stages are off by up to that much (a virtual machine's vCPUs "
         "can share physical cores with other work)";
}

std::string unsteadiness_message(const CpuCalibration& measured) {
  if (measured.unsteadiness <= kUnsteadyFraction) return "";
  char text[500];
  std::snprintf(text, sizeof(text),
                "calibration: this machine is unsteady now: the same training block on one core took times %.0f%% of "
                "their median apart within a second (other work on the same physical cores, as a virtual machine's "
                "neighbours, or clock changes). Measured times move by as much from one minute to the next, and no "
                "prediction from a profile is closer than that",
                100.0 * measured.unsteadiness);
  return text;
}

}  // namespace pipetrain
