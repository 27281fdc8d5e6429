// Hardware descriptions from YAML (configs/hardware/*.yaml, embedded in the binary) or probed from
// this machine, and stage maps from YAML.
//
//   HardwareSpec hw = load_hardware("rtx2070s-wsl");     // a preset
//   HardwareSpec here = load_hardware("this-machine");   // probed: RAM, cgroup, cores, GPUs, GEMM rate
//   HardwareSpec mine = load_hardware("boxes/lab.yaml"); // a file
#pragma once

#include <string>
#include <vector>

#include "memory/hardware.h"
#include "memory/model_config.h"
#include "memory/stage_map.h"

namespace YAML {
class Node;
}

namespace pipetrain {

std::vector<std::string> hardware_preset_names();

// A preset name, "this-machine", or a path to a YAML file. Validated; InputError names the problem.
HardwareSpec load_hardware(const std::string& name_or_path);
// A preset name or a YAML file (not "this-machine"): what load_hardware does without probing.
HardwareSpec load_hardware_file_or_preset(const std::string& name_or_path);
HardwareSpec parse_hardware(const std::string& yaml_text, const std::string& source);
// The hardware as YAML that parse_hardware reads back (a profile: pipetrain profile writes these).
std::string hardware_to_yaml(const HardwareSpec& hardware);

// Probes RAM (capped by a cgroup limit), cores, GPUs through the driver, and measures the CPU's
// GEMM rate on all cores and on one (about a second).
HardwareSpec probe_this_machine();

// A YAML list of {device, layers: [first, last], cores} entries (or a mapping with key `stages`).
StageMap parse_stage_map(const YAML::Node& node, const ModelConfig& model, const std::string& source);
StageMap load_stage_map_file(const std::string& path, const ModelConfig& model);

}  // namespace pipetrain
