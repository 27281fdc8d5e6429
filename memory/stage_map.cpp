#include "memory/stage_map.h"

#include <algorithm>
#include <cctype>

#include "memory/errors.h"

namespace pipetrain {

int64_t parse_layer_ref(const std::string& ref, const ModelConfig& model) {
  if (ref == "embed") return kEmbedLayer;
  if (ref == "head") return head_layer(model);
  bool digits = !ref.empty();
  for (char c : ref) digits = digits && std::isdigit(static_cast<unsigned char>(c));
  if (!digits || ref.size() > 9) {
    throw InputError("layer '" + ref + "' is not embed, head or a block index 0.." + std::to_string(model.num_layers - 1));
  }
  const int64_t block = std::stoll(ref);
  if (block >= model.num_layers) {
    throw InputError("block " + ref + " does not exist: the model has blocks 0.." + std::to_string(model.num_layers - 1));
  }
  return block_layer(block);
}

std::string layer_ref(const ModelConfig& model, int64_t i) {
  const LayerId id = layer_at(model, i);
  return id.kind == LayerKind::kBlock ? std::to_string(id.block_index) : layer_name(model, i);
}

std::string describe_range(const ModelConfig& model, int64_t first, int64_t last) {
  return first == last ? layer_name(model, first) : layer_name(model, first) + ".." + layer_name(model, last);
}

void validate_stage_map(const StageMap& map, const ModelConfig& model, const HardwareSpec& hardware) {
  if (map.stages.empty()) throw InputError("the stage map has no stages");
  const int64_t n = model.num_model_layers();
  int64_t next = 0;  // the first layer not yet covered
  // Per host: the cores its cpu stages own, and its first cpu stage with cores: 0.
  const int hosts = map.num_hosts();
  std::vector<int> cpu_cores(static_cast<size_t>(hosts), 0), shared_cpu_stage(static_cast<size_t>(hosts), -1);
  std::vector<int> stages_on_host(static_cast<size_t>(hosts), 0);
  for (size_t s = 0; s < map.stages.size(); ++s) {
    const StageSpec& st = map.stages[s];
    const std::string where = "stage " + std::to_string(s);
    if (st.host < 0 || st.host >= kMaxHosts) {
      throw InputError(where + " has host = " + std::to_string(st.host) + "; hosts are 0.." + std::to_string(kMaxHosts - 1));
    }
    if (!hardware.has_device(st.device)) {
      throw InputError(where + " names device '" + st.device.name() + "', which hardware '" + hardware.name +
                       "' does not have (it has: " + hardware.device_names() + ")");
    }
    // Weights away from the compute device are streamed: only into a device of its own memory from
    // CPU RAM, where the optimizer then lives too (it updates the float32 masters they come from).
    const Placement place = st.placement();
    if (place.streamed()) {
      if (!place.compute.has_own_memory() || !place.weights.is_cpu()) {
        throw InputError(where + " keeps its weights on " + place.weights.name() + " but computes on " +
                         place.compute.name() + "; weights are streamed only from cpu RAM into a GPU (`weights: cpu` "
                         "on a cuda stage)");
      }
      if (!place.optimizer.is_cpu()) {
        throw InputError(where + " streams its weights from cpu RAM but keeps its optimizer on " + place.optimizer.name() +
                         "; a streamed stage's optimizer lives in RAM with its weights (optimizer: cpu)");
      }
    }
    // The optimizer may live in CPU RAM for layers that compute on a device of their own memory
    // (gradients come out, updated weights go back); nowhere else.
    const bool optimizer_in_ram = place.optimizer.is_cpu() && place.compute.has_own_memory();
    if (place.optimizer != place.compute && !optimizer_in_ram) {
      throw InputError(where + " keeps its optimizer state on " + place.optimizer.name() + " but computes on " +
                       place.compute.name() + "; the optimizer lives where its layers compute, or in CPU RAM for a "
                       "GPU stage (optimizer: cpu)");
    }
    if (!hardware.has_device(place.optimizer)) {
      throw InputError(where + " keeps its optimizer state on '" + place.optimizer.name() + "', which hardware '" +
                       hardware.name + "' does not have (it has: " + hardware.device_names() + ")");
    }
    if (st.first < 0 || st.last >= n || st.first > n - 1 || st.last < 0) {
      throw InputError(where + " names layers outside the model's embed..head");
    }
    if (st.first > st.last) {
      throw InputError(where + " is reversed: it starts at " + layer_name(model, st.first) + " and ends at " +
                       layer_name(model, st.last));
    }
    if (st.first > next) {
      throw InputError("stage map has a gap: " + describe_range(model, next, st.first - 1) + " belong to no stage (" +
                       where + " starts at " + layer_name(model, st.first) + ")");
    }
    if (st.first < next) {
      throw InputError("stage map overlaps: " + describe_range(model, st.first, next - 1) + " are in " + where +
                       " and in an earlier stage");
    }
    if (st.cores < 0) throw InputError(where + " has cores = " + std::to_string(st.cores) + "; must be >= 0");
    if (st.cores > 0 && !st.device.is_cpu()) {
      throw InputError(where + " gives cores to a " + st.device.name() + " stage; cores only apply to cpu stages");
    }
    if (st.lanes < 1) throw InputError(where + " has lanes = " + std::to_string(st.lanes) + "; must be >= 1");
    if (st.lanes > 1 && !st.device.is_cpu()) {
      throw InputError(where + " gives lanes to a " + st.device.name() + " stage; lanes split a cpu stage's cores");
    }
    if (st.lanes > 1 && st.cores > 0 && st.cores % st.lanes != 0) {
      throw InputError(where + " has lanes = " + std::to_string(st.lanes) + " on cores = " + std::to_string(st.cores) +
                       "; each lane gets an equal share, so lanes must divide cores");
    }
    const size_t h = static_cast<size_t>(st.host);
    ++stages_on_host[h];
    cpu_cores[h] += st.cores;
    if (st.cores == 0 && shared_cpu_stage[h] < 0 && st.device.is_cpu()) shared_cpu_stage[h] = static_cast<int>(s);
    next = st.last + 1;
  }
  if (next < n) {
    throw InputError("stage map covers " + describe_range(model, 0, next - 1) + " but the model also has " +
                     describe_range(model, next, n - 1) + " (missing)");
  }
  for (int h = 0; h < hosts; ++h) {
    if (stages_on_host[static_cast<size_t>(h)] == 0) {
      throw InputError("the stage map names host " + std::to_string(hosts - 1) + " but no stage runs on host " +
                       std::to_string(h) + "; hosts are numbered 0.." + std::to_string(hosts - 1) + " without gaps");
    }
  }
  // Every host is a machine of this hardware: the cores of its stages are counted per host.
  const int available = hardware.cpu().cores;
  for (int h = 0; h < hosts; ++h) {
    const int owned = cpu_cores[static_cast<size_t>(h)];
    if (owned > available) {
      throw InputError("the stage map gives cpu stages " + (hosts > 1 ? "on host " + std::to_string(h) + " " : std::string()) +
                       std::to_string(owned) + " cores; hardware '" + hardware.name + "' has " + std::to_string(available));
    }
  }
  // Micro-batches move in groups of the largest lane count (scheduler/schedule.h); a stage's waves
  // line up with its lanes only when its count divides that.
  for (size_t s = 0; s < map.stages.size(); ++s) {
    if (max_lanes(map) % map.stages[s].lanes != 0) {
      throw InputError("stage " + std::to_string(s) + " has lanes = " + std::to_string(map.stages[s].lanes) +
                       ", which does not divide another stage's " + std::to_string(max_lanes(map)) +
                       "; micro-batches move in groups of the largest lane count");
    }
  }
  // A stage with lanes and no cores of its own splits the pool of the cores no stage owns: it must
  // be alone there, and the lanes must divide the pool.
  std::vector<int> pool_stages(static_cast<size_t>(hosts), 0);
  for (const StageSpec& st : map.stages) pool_stages[static_cast<size_t>(st.host)] += st.device.is_cpu() && st.cores == 0 ? 1 : 0;
  for (size_t s = 0; s < map.stages.size(); ++s) {
    const StageSpec& st = map.stages[s];
    if (st.lanes == 1 || st.cores > 0) continue;
    const int pool = available - cpu_cores[static_cast<size_t>(st.host)];
    const int pool_mates = pool_stages[static_cast<size_t>(st.host)];
    if (pool_mates > 1) {
      throw InputError("stage " + std::to_string(s) + " has lanes = " + std::to_string(st.lanes) + " but shares its cores with " +
                       std::to_string(pool_mates - 1) + " other cpu stage(s); give it cores of its own to split into lanes");
    }
    if (pool > 0 && pool % st.lanes != 0) {
      throw InputError("stage " + std::to_string(s) + " has lanes = " + std::to_string(st.lanes) + " on the " +
                       std::to_string(pool) + " cores no stage owns; each lane gets an equal share, so lanes must divide " +
                       std::to_string(pool));
    }
  }
  for (int h = 0; h < hosts; ++h) {
    const int shared = shared_cpu_stage[static_cast<size_t>(h)];
    if (shared >= 0 && cpu_cores[static_cast<size_t>(h)] == available) {
      throw InputError("stage " + std::to_string(shared) +
                       " has cores: 0 (it shares the cores no stage owns), but the other cpu stages " +
                       (hosts > 1 ? "on host " + std::to_string(h) + " " : std::string()) + "own all " +
                       std::to_string(available) + " cores of hardware '" + hardware.name +
                       "'; give it cores, or take some from the others");
    }
  }
}

std::vector<Placement> layer_placements(const StageMap& map) {
  std::vector<Placement> layers;
  for (const StageSpec& st : map.stages) {
    for (int64_t i = st.first; i <= st.last; ++i) layers.push_back(st.placement());
  }
  return layers;
}

StageMap make_stage_map(const std::vector<DeviceId>& devices, const std::vector<int64_t>& last_layers,
                        const std::vector<int>& cores, const std::vector<int>& lanes) {
  StageMap map;
  int64_t first = kEmbedLayer;
  for (size_t s = 0; s < devices.size(); ++s) {
    map.stages.push_back({devices[s], first, last_layers[s], s < cores.size() ? cores[s] : 0, {}, {}});
    if (s < lanes.size()) map.stages.back().lanes = lanes[s];
    first = last_layers[s] + 1;
  }
  return map;
}

int max_lanes(const StageMap& map) {
  int most = 1;
  for (const StageSpec& st : map.stages) most = std::max(most, st.lanes);
  return most;
}

StageMap single_cpu_stage(const ModelConfig& model) { return make_stage_map({DeviceId::cpu()}, {head_layer(model)}); }

}  // namespace pipetrain
