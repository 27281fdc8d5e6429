// Which CPU cores each stage computes on: cores are assigned, not fought over.
//
// A CPU stage with `cores: n` owns n cores (its resource "cpu[s]"); CPU stages with `cores: 0` share
// one pool made of every core no stage owns (resource "cpu"), and take turns on it, one op at a time.
// Cores are logical indices 0..n-1 into the cores this process may use; the runtime maps them to the
// OS's CPU ids and pins the thread that runs a stage's op to its group's cores.
// GPU stages compute on their device; the thread that feeds one takes no core budget of its own here
// (it launches kernels and waits), so it belongs to no group.
//
// Threads follow the groups. OpenBLAS's thread count is process-wide: with one group it gets all of
// the group's cores and LibTorch's intra-op pool one thread (the best setting measured here,
// benchmarks/README.md); as soon as two groups can run at once OpenBLAS gets one thread (two stages
// with two OpenBLAS threads each ran at half the speed of one thread each, DESIGN.md) and each group
// uses its cores through LibTorch's intra-op threads instead. A stage with lanes is that many
// groups computing at once: OpenBLAS one thread, each lane its share through intra-op threads. The resource names are the simulator's, so predicted and measured timelines line up.
//
//   CoreAssignment cores = assign_cores(map, hardware);
//   const CoreGroup& g = cores.groups[cores.group_of_stage[s]];   // g.cpus, g.resource
#pragma once

#include <string>
#include <vector>

#include "memory/hardware.h"
#include "memory/stage_map.h"

namespace pipetrain {

// The simulator's and the executor's names for what runs one op at a time, made here and nowhere
// else: the shared CPU pool "cpu", a CPU stage's own cores "cpu[s]", a GPU "cuda:0", and the copy
// engine of a link "cpu->cuda:0"; on a host other than 0, "cpu@host1" and "cuda:0@host1"; the
// network from one host to another "host0->host1".
inline const std::string kSharedCpuPool = "cpu";
std::string compute_resource(const StageSpec& stage, int index);
std::string link_resource(DeviceId from, DeviceId to);
std::string network_resource(int from_host, int to_host);

struct CoreGroup {
  std::string resource;   // "cpu" (the shared pool) or "cpu[s]" (stage s's own cores)
  std::vector<int> cpus;  // logical core indices
  std::vector<int> stages;
  int intra_op_threads = 1;  // per lane
  int lanes = 1;             // its stage's lanes (a group with lanes has one stage): lane j computes on cpus
                             // [j * n / lanes, (j + 1) * n / lanes)
  std::vector<int> lane_cpus(int lane) const;
};

struct CoreAssignment {
  std::vector<int> group_of_stage;  // index into groups; -1 for a stage on another device
  std::vector<CoreGroup> groups;
  int blas_threads = 1;     // process-wide OpenBLAS threads
  int compute_threads = 0;  // threads computing at once at most: Σ cores of the groups
};

// The map must be valid (validate_stage_map). Throws InputError when shared stages are left no core.
CoreAssignment assign_cores(const StageMap& map, const HardwareSpec& hardware);

// "stage 0,2 share cores 0; stage 1 owns core 1" for the run's log.
std::string describe_cores(const CoreAssignment& cores);

}  // namespace pipetrain
