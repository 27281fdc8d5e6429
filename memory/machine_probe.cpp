#include "memory/machine_probe.h"

#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

namespace pipetrain {
namespace {

bool read_file(const std::string& path, std::string& out) {
  std::ifstream in(path);
  if (!in) return false;
  std::stringstream buffer;
  buffer << in.rdbuf();
  out = buffer.str();
  return true;
}

// A cgroup file holding one number or "max".
int64_t read_limit(const std::string& path) {
  std::string text;
  if (!read_file(path, text)) return -1;
  if (text.rfind("max", 0) == 0) return -1;
  try {
    const long long value = std::stoll(text);
    // cgroup v1 reports "no limit" as a huge page-aligned number.
    if (value <= 0 || value >= (1LL << 60)) return -1;
    return value;
  } catch (...) {
    return -1;
  }
}

}  // namespace

int64_t meminfo_bytes(const std::string& text, const std::string& key) {
  std::istringstream lines(text);
  std::string line;
  const std::string prefix = key + ":";
  while (std::getline(lines, line)) {
    if (line.rfind(prefix, 0) != 0) continue;
    std::istringstream fields(line.substr(prefix.size()));
    long long kib = -1;
    fields >> kib;
    return kib < 0 ? -1 : kib * 1024;
  }
  return -1;
}

MachineMemory probe_machine_memory() {
  MachineMemory mem;
  std::string meminfo;
  if (read_file("/proc/meminfo", meminfo)) {
    mem.ram_total_bytes = meminfo_bytes(meminfo, "MemTotal");
    mem.ram_available_bytes = meminfo_bytes(meminfo, "MemAvailable");
    mem.swap_total_bytes = meminfo_bytes(meminfo, "SwapTotal");
    mem.swap_free_bytes = meminfo_bytes(meminfo, "SwapFree");
  }
  mem.cgroup_limit_bytes = read_limit("/sys/fs/cgroup/memory.max");
  if (mem.cgroup_limit_bytes < 0) mem.cgroup_limit_bytes = read_limit("/sys/fs/cgroup/memory/memory.limit_in_bytes");
  mem.cgroup_usage_bytes = read_limit("/sys/fs/cgroup/memory.current");
  if (mem.cgroup_usage_bytes < 0) mem.cgroup_usage_bytes = read_limit("/sys/fs/cgroup/memory/memory.usage_in_bytes");
  return mem;
}

int usable_cores() {
  int cores = 0;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) cores = CPU_COUNT(&set);
  if (cores <= 0) cores = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  std::string text;
  if (read_file("/sys/fs/cgroup/cpu.max", text)) {
    std::istringstream fields(text);
    std::string quota;
    long long period = 0;
    fields >> quota >> period;
    if (quota != "max" && period > 0) {
      const long long q = std::atoll(quota.c_str());
      const int quota_cores = static_cast<int>(std::max(1LL, (q + period - 1) / period));
      if (quota_cores < cores) cores = quota_cores;
    }
  }
  return cores < 1 ? 1 : cores;
}

int64_t peak_rss_bytes() {
  struct rusage usage {};
  if (getrusage(RUSAGE_SELF, &usage) != 0) return -1;
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;  // Linux reports KiB
}

int64_t current_rss_bytes() {
  std::string text;
  if (!read_file("/proc/self/statm", text)) return -1;
  std::istringstream fields(text);
  long long size_pages = 0, resident_pages = 0;
  if (!(fields >> size_pages >> resident_pages)) return -1;
  return resident_pages * static_cast<int64_t>(sysconf(_SC_PAGESIZE));
}

}  // namespace pipetrain
