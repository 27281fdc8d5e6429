// This machine as a hardware description: probed RAM, cores and GPUs, and measured GEMM rates.
//
//   HardwareSpec hw = load_hardware("rtx2070s-wsl");     // a preset
//   HardwareSpec here = load_hardware("this-machine");   // probed: RAM, cgroup, cores, GPUs, GEMM rate
//   HardwareSpec mine = load_hardware("boxes/lab.yaml"); // a file
#pragma once

#include <string>

#include "memory/hardware.h"

namespace pipetrain {

// Probes RAM (capped by a cgroup limit), cores, GPUs through the driver, and measures the CPU's
// GEMM rate on all cores and on one (about a second).
HardwareSpec probe_this_machine();

// A preset name, "this-machine", or a path to a YAML file. Validated; InputError names the problem.
HardwareSpec load_hardware(const std::string& name_or_path);

}  // namespace pipetrain
