// Hardware descriptions from YAML (configs/hardware/*.yaml, embedded in the binary, or a file), and
// stage maps from YAML. No LibTorch here: the fuzzer runs these parsers alone. `this-machine` is
// probed by runtime/tools/hardware_probe.h, which also takes the names this file takes.
//
//   HardwareSpec hw = load_hardware_file_or_preset("rtx2070s-wsl");     // a preset
//   HardwareSpec mine = load_hardware_file_or_preset("boxes/lab.yaml"); // a file
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

// A preset name or a YAML file (not "this-machine"). Validated; InputError names the problem.
HardwareSpec load_hardware_file_or_preset(const std::string& name_or_path);
HardwareSpec parse_hardware(const std::string& yaml_text, const std::string& source);
// The hardware as YAML that parse_hardware reads back (a profile: pipetrain profile writes these).
std::string hardware_to_yaml(const HardwareSpec& hardware);

// `name` as a device; InputError naming the source and key ("box.yaml: devices[1].name: 'tpu' is
// not a device; ...") otherwise.
DeviceId parse_device_at(const std::string& name, const std::string& key, const std::string& source);

// A YAML list of {device, layers: [first, last], cores, weights, optimizer} entries (or a mapping
// with the key `stages`). `weights` and `optimizer` name where a stage's weights and optimizer
// state live (default: its device); validate_stage_map says which the runtime supports.
StageMap parse_stage_map(const YAML::Node& node, const ModelConfig& model, const std::string& source);
StageMap load_stage_map_file(const std::string& path, const ModelConfig& model);

}  // namespace pipetrain
