#include "runtime/backends/cpu/core_pinning.h"

#include <pthread.h>

namespace pipetrain {

const std::vector<int>& usable_cpu_ids() {
  static const std::vector<int> ids = [] {
    cpu_set_t set;
    CPU_ZERO(&set);
    std::vector<int> out;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
      for (int c = 0; c < CPU_SETSIZE; ++c) {
        if (CPU_ISSET(c, &set)) out.push_back(c);
      }
    }
    return out;
  }();
  return ids;
}

PinToCores::PinToCores(const std::vector<int>& cores) {
  const std::vector<int>& ids = usable_cpu_ids();
  if (ids.empty() || cores.empty()) return;
  cpu_set_t mine;
  CPU_ZERO(&mine);
  for (int c : cores) CPU_SET(ids[static_cast<size_t>(c) % ids.size()], &mine);
  CPU_ZERO(&previous_);
  pinned_ = pthread_getaffinity_np(pthread_self(), sizeof(previous_), &previous_) == 0 &&
            pthread_setaffinity_np(pthread_self(), sizeof(mine), &mine) == 0;
}

PinToCores::~PinToCores() {
  if (pinned_) pthread_setaffinity_np(pthread_self(), sizeof(previous_), &previous_);
}

}  // namespace pipetrain
