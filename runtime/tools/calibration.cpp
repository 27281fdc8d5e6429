#include "runtime/tools/calibration.h"

#include <algorithm>
#include <cstdio>

#include "memory/machine_probe.h"
#include "runtime/backends/cpu/threads.h"
#include "runtime/tools/doctor.h"

namespace pipetrain {

bool is_measured_profile(const HardwareSpec& hardware) { return !hardware.measured.entries.empty(); }

Calibration calibrate_cpu(const HardwareSpec& hardware) {
  const DeviceSpec& cpu = hardware.cpu();
  const int cores = std::min(cpu.cores, usable_cores());
  Calibration c;
  c.recorded_flops_per_s = cpu.flops_per_s;
  c.measured_flops_per_s = measure_matmul_gflops(choose_threads(1, cores, cores), 0.3) * 1e9;
  apply_threads(choose_threads(0, 0, cores));
  return c;
}

std::string calibration_message(const Calibration& c, const std::string& hardware_name, bool rescaled) {
  char text[800];
  std::snprintf(text, sizeof(text),
                "calibration: this machine multiplies at %.1f GFLOP/s on all cores now; profile '%s' recorded %.1f "
                "(%+.0f%%). Its measured times describe the machine as it was, so predictions are off by about as much",
                c.measured_flops_per_s / 1e9, hardware_name.c_str(), c.recorded_flops_per_s / 1e9, 100.0 * c.change());
  std::string out = text;
  if (rescaled) {
    std::snprintf(text, sizeof(text), ": its CPU times were multiplied by %.2f (--rescale-profile)", c.time_scale());
  } else {
    std::snprintf(text, sizeof(text),
                  ". Re-run `pipetrain profile`, or add --rescale-profile to multiply its CPU times by %.2f", c.time_scale());
  }
  return out + text;
}

}  // namespace pipetrain
