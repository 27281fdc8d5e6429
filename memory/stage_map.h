// A stage map: the model's layer list cut into contiguous stages, each placed on a device.
//
//   stages:                                   layer list of a 24-block model:
//     - {device: cpu,    layers: [embed, 3]}    0 = embed, 1..24 = block 0..23, 25 = head
//     - {device: cuda:0, layers: [4, 19]}       a number is a block index
//     - {device: cpu,    layers: [20, head]}
//
// Placement is data, per layer: where it computes, where its weights live and where its optimizer
// state lives. A stage map states them per stage (`weights:` and `optimizer:` are optional keys
// that default to the compute device); the plan expands them per layer (layer_placements). Three
// placements exist:
//   resident   weights where the layer computes (the optimizer there, or in RAM for a GPU stage)
//   streamed   computes on a GPU, weights and optimizer in CPU RAM (`weights: cpu, optimizer: cpu`):
//              each layer's 16-bit weights cross into a GPU window of a few layers just before
//              it computes, and its gradients come back; the stage runs layer-major
//              (scheduler/schedules/layer_major.cpp)
//   cpu        computes on CPU cores, everything in RAM
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "memory/device.h"
#include "memory/hardware.h"
#include "memory/model_config.h"

namespace pipetrain {

// Where one layer computes, and where its weights and its optimizer state live.
struct Placement {
  DeviceId compute;
  DeviceId weights;
  DeviceId optimizer;
  bool operator==(const Placement& o) const {
    return compute == o.compute && weights == o.weights && optimizer == o.optimizer;
  }
  // Computes on a device of its own memory with its weights in host RAM, streamed in per layer.
  bool streamed() const { return weights != compute; }
};

struct StageSpec {
  DeviceId device;     // where the stage's layers compute
  int64_t first = 0;   // index into the layer list (0 = embed, L+1 = head), inclusive
  int64_t last = 0;    // inclusive
  int cores = 0;       // CPU stages: cores given to this stage; 0 = share the cores no stage owns
  std::optional<DeviceId> weights;    // the stage map's `weights:`; none: the compute device
  std::optional<DeviceId> optimizer;  // the stage map's `optimizer:`; none: the compute device
  // CPU stages: micro-batches computed at once, each on its own equal share of the stage's cores
  // (micro-batch k on lane k mod lanes, with its own gradient buffers, summed in lane order after
  // the backward). 1: one micro-batch at a time on all of them.
  int lanes = 1;
  // The machine of the run that computes it (the stage map's `host:`; runtime/dist: process rank =
  // replica x hosts + host). Its device is that machine's; activations cross hosts over the network.
  int host = 0;

  Placement placement() const { return {device, weights.value_or(device), optimizer.value_or(device)}; }
  bool operator==(const StageSpec& o) const {
    return device == o.device && first == o.first && last == o.last && cores == o.cores && lanes == o.lanes &&
           host == o.host && placement() == o.placement();
  }
};

// Hosts a stage map may name: 0 .. kMaxHosts - 1.
inline constexpr int kMaxHosts = 4096;

struct StageMap {
  std::vector<StageSpec> stages;
  int num_stages() const { return static_cast<int>(stages.size()); }
  // The machines the stages run on: 1 + the largest host (validate_stage_map: each holds a stage).
  int num_hosts() const {
    int hosts = 1;
    for (const StageSpec& st : stages) hosts = st.host + 1 > hosts ? st.host + 1 : hosts;
    return hosts;
  }
  bool operator==(const StageMap& o) const { return stages == o.stages; }
};

// "embed" -> 0, "head" -> L+1, "7" -> block 7 = 8. Throws InputError naming the reference.
int64_t parse_layer_ref(const std::string& ref, const ModelConfig& model);
// How a stage map names layer i: "embed", "head", or the block index ("7").
std::string layer_ref(const ModelConfig& model, int64_t i);
// "embed..block 3" for messages and tables.
std::string describe_range(const ModelConfig& model, int64_t first, int64_t last);

// Full coverage, no gaps, no overlaps, in order, known devices, core counts that fit the CPU, lanes
// that divide a stage's cores, and homes the runtime supports. Errors name the layers: "stage map covers embed..block 22 but the
// model also has block 23, head".
void validate_stage_map(const StageMap& map, const ModelConfig& model, const HardwareSpec& hardware);

// Per layer of the layer list, its placement (the stage that holds it decides).
std::vector<Placement> layer_placements(const StageMap& map);

// Cuts the layer list at the given boundaries: stage s covers layers [last[s-1]+1, last[s]].
StageMap make_stage_map(const std::vector<DeviceId>& devices, const std::vector<int64_t>& last_layers,
                        const std::vector<int>& cores = {}, const std::vector<int>& lanes = {});

// The largest lane count of the map's stages: the schedule moves micro-batches in groups of that
// many (scheduler/schedule.h), so that a stage with lanes has that many to compute at once.
int max_lanes(const StageMap& map);

// The whole model as one stage on the CPU, sharing its cores.
StageMap single_cpu_stage(const ModelConfig& model);

}  // namespace pipetrain
