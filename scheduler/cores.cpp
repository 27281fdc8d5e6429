#include "scheduler/cores.h"

#include <algorithm>
#include <cstddef>

#include "memory/errors.h"

namespace pipetrain {

std::string compute_resource(const StageSpec& stage, int index) {
  if (stage.device.is_cpu() && stage.cores > 0) return "cpu[" + std::to_string(index) + "]";
  const std::string on_host = stage.host > 0 ? "@host" + std::to_string(stage.host) : "";
  if (stage.device.is_cpu()) return kSharedCpuPool + on_host;
  return stage.device.name() + on_host;
}

std::string network_resource(int from_host, int to_host) {
  return "host" + std::to_string(from_host) + "->host" + std::to_string(to_host);
}

std::string link_resource(DeviceId from, DeviceId to) { return from.name() + "->" + to.name(); }

namespace {

std::string join(const std::vector<int>& values) {
  std::string text;
  for (size_t i = 0; i < values.size(); ++i) text += (i ? "," : "") + std::to_string(values[i]);
  return text;
}

}  // namespace

CoreAssignment assign_cores(const StageMap& map, const HardwareSpec& hardware) {
  const int available = hardware.cpu().cores;
  CoreAssignment out;
  out.group_of_stage.assign(map.stages.size(), -1);
  // Each host is a machine of `hardware`: its stages' cores are numbered from 0 on it.
  for (int host = 0; host < map.num_hosts(); ++host) {
    int next_core = 0;
    std::vector<int> shared_stages;
    for (size_t s = 0; s < map.stages.size(); ++s) {
      const StageSpec& st = map.stages[s];
      if (!st.device.is_cpu() || st.host != host) continue;
      if (st.cores == 0) {
        shared_stages.push_back(static_cast<int>(s));
        continue;
      }
      CoreGroup group{compute_resource(st, static_cast<int>(s)), {}, {static_cast<int>(s)}};
      for (int c = 0; c < st.cores; ++c) group.cpus.push_back(next_core++);
      out.group_of_stage[s] = static_cast<int>(out.groups.size());
      out.groups.push_back(group);
    }
    if (next_core > available) {
      throw InputError("the stage map gives cpu stages " + std::to_string(next_core) + " cores; hardware '" +
                       hardware.name + "' has " + std::to_string(available));
    }
    if (!shared_stages.empty()) {
      if (next_core == available) {
        throw InputError("cpu stage " + std::to_string(shared_stages.front()) +
                         " has cores: 0 (share the cores no stage owns), but the other stages own all " +
                         std::to_string(available) + " cores of hardware '" + hardware.name +
                         "'; give it cores, or take some from the others");
      }
      CoreGroup pool{compute_resource(map.stages[static_cast<size_t>(shared_stages.front())], shared_stages.front()), {}, shared_stages};
      for (int c = next_core; c < available; ++c) pool.cpus.push_back(c);
      for (int s : shared_stages) out.group_of_stage[static_cast<size_t>(s)] = static_cast<int>(out.groups.size());
      out.groups.push_back(pool);
    }
  }
  // BLAS threads are one setting per process: all of a group's cores when each host has one group
  // (of one lane), else one, with the groups' intra-op threads doing the rest.
  std::vector<int> groups_on_host(static_cast<size_t>(map.num_hosts()), 0);
  bool one_lane = true;
  for (CoreGroup& g : out.groups) {
    out.compute_threads += static_cast<int>(g.cpus.size());
    if (g.stages.size() == 1) g.lanes = map.stages[static_cast<size_t>(g.stages.front())].lanes;
    ++groups_on_host[static_cast<size_t>(map.stages[static_cast<size_t>(g.stages.front())].host)];
    one_lane = one_lane && g.lanes == 1;
  }
  bool one_group_per_host = !out.groups.empty();
  for (int n : groups_on_host) one_group_per_host = one_group_per_host && n <= 1;
  if (one_group_per_host && one_lane) {
    out.blas_threads = static_cast<int>(out.groups.front().cpus.size());
    for (const CoreGroup& g : out.groups) out.blas_threads = std::min(out.blas_threads, static_cast<int>(g.cpus.size()));
  } else {
    out.blas_threads = 1;
    for (CoreGroup& g : out.groups) g.intra_op_threads = std::max(1, static_cast<int>(g.cpus.size()) / g.lanes);
  }
  return out;
}

std::vector<int> CoreGroup::lane_cpus(int lane) const {
  const size_t n = cpus.size(), per = std::max<size_t>(1, n / static_cast<size_t>(lanes));
  const size_t begin = std::min(n - 1, static_cast<size_t>(lane) * per);
  return std::vector<int>(cpus.begin() + static_cast<std::ptrdiff_t>(begin),
                          cpus.begin() + static_cast<std::ptrdiff_t>(std::min(n, begin + per)));
}

std::string describe_cores(const CoreAssignment& cores) {
  std::string text;
  for (const CoreGroup& g : cores.groups) {
    if (!text.empty()) text += "; ";
    text += (g.stages.size() == 1 ? "stage " : "stages ") + join(g.stages) +
            (g.stages.size() == 1 && g.resource.compare(0, 4, "cpu[") == 0 ? " owns " : (g.stages.size() == 1 ? " uses " : " share ")) +
            (g.cpus.size() == 1 ? "core " : "cores ") + join(g.cpus) +
            (g.lanes > 1 ? " in " + std::to_string(g.lanes) + " lanes" : "");
  }
  text += (text.empty() ? "no CPU stage" : "") + std::string("; OpenBLAS ") + std::to_string(cores.blas_threads) + " thread" + (cores.blas_threads == 1 ? "" : "s");
  return text;
}

}  // namespace pipetrain
