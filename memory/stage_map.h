// A stage map: the model's layer list cut into contiguous stages, each placed on a device.
//
//   stages:                                   layer list of a 24-block model:
//     - {device: cpu,    layers: [embed, 3]}    0 = embed, 1..24 = block 0..23, 25 = head
//     - {device: cuda:0, layers: [4, 19]}       a number is a block index
//     - {device: cpu,    layers: [20, head]}
//
// Placement is data (compute device, and later where weights and optimizer state live), so that
// streamed weights and multi-machine stages can arrive without a rewrite.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "memory/hardware.h"
#include "memory/model_config.h"

namespace pipetrain {

struct StageSpec {
  std::string device;  // compute device, e.g. "cpu", "cuda:0"
  int64_t first = 0;   // index into the layer list (0 = embed, L+1 = head), inclusive
  int64_t last = 0;    // inclusive
  int cores = 0;       // CPU stages: cores given to this stage; 0 = share the cores no stage owns
  bool operator==(const StageSpec& o) const {
    return device == o.device && first == o.first && last == o.last && cores == o.cores;
  }
};

struct StageMap {
  std::vector<StageSpec> stages;
  int num_stages() const { return static_cast<int>(stages.size()); }
  bool operator==(const StageMap& o) const { return stages == o.stages; }
};

// "embed" -> 0, "head" -> L+1, "7" -> block 7 = 8. Throws InputError naming the reference.
int64_t parse_layer_ref(const std::string& ref, const ModelConfig& model);
// "embed..block 3" for messages and tables.
std::string describe_range(const ModelConfig& model, int64_t first, int64_t last);

// Full coverage, no gaps, no overlaps, in order, known devices, core counts that fit the CPU.
// Errors name the layers: "stage map covers embed..block 22 but the model also has block 23, head".
void validate_stage_map(const StageMap& map, const ModelConfig& model, const HardwareSpec& hardware);

// Cuts the layer list at the given boundaries: stage s covers layers [cuts[s-1]+1, cuts[s]].
StageMap make_stage_map(const std::vector<std::string>& devices, const std::vector<int64_t>& last_layers,
                        const std::vector<int>& cores = {});

}  // namespace pipetrain
