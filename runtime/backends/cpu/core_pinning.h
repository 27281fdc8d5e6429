// Pinning the calling thread to the cores a stage owns. scheduler/cores.h numbers cores 0..n-1
// among those this process may use (its affinity mask when it started); logical core i is the i-th
// of them, taken modulo their count (a hardware file may describe more cores than this machine has).
//
//   { PinToCores pin({2, 3}); run_op(); }   // the thread runs on the 3rd and 4th usable CPUs meanwhile
#pragma once

#include <sched.h>

#include <vector>

namespace pipetrain {

// The OS's ids of the CPUs this process may run on, as it started: logical core i is the i-th.
const std::vector<int>& usable_cpu_ids();

class PinToCores {
 public:
  // Pins the calling thread to `cores` (logical indices) until destroyed; does nothing when the
  // OS refuses (the work still runs, unpinned).
  explicit PinToCores(const std::vector<int>& cores);
  ~PinToCores();
  PinToCores(const PinToCores&) = delete;
  PinToCores& operator=(const PinToCores&) = delete;

 private:
  cpu_set_t previous_;
  bool pinned_ = false;
};

}  // namespace pipetrain
