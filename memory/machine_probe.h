// Probes of the live machine: RAM, swap, the cgroup memory and CPU limits, usable cores, RSS.
//
// These only read /proc and /sys; they fill plain numbers that the planner and `pipetrain doctor`
// reason about. A value that cannot be read is reported as -1 (never guessed).
//
//   MachineMemory mem = probe_machine_memory();
//   if (mem.cgroup_limit_bytes > 0) { ... the container is smaller than the host ... }
#pragma once

#include <cstdint>
#include <string>

namespace pipetrain {

struct MachineMemory {
  int64_t ram_total_bytes = -1;      // MemTotal
  int64_t ram_available_bytes = -1;  // MemAvailable
  int64_t swap_total_bytes = -1;
  int64_t swap_free_bytes = -1;
  int64_t cgroup_limit_bytes = -1;   // memory.max (v2) or memory.limit_in_bytes (v1); -1 = no limit
  int64_t cgroup_usage_bytes = -1;
};

MachineMemory probe_machine_memory();

// Cores this process may run on: the affinity mask, capped by a cgroup CPU quota if one is set.
int usable_cores();

// Peak resident set size of this process so far (getrusage), in bytes.
int64_t peak_rss_bytes();
// Current resident set size (/proc/self/statm), in bytes; -1 if unreadable.
int64_t current_rss_bytes();

// Parses /proc/meminfo text; exposed for tests. Returns -1 for a missing key.
int64_t meminfo_bytes(const std::string& meminfo_text, const std::string& key);

}  // namespace pipetrain
