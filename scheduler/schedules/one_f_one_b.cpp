// 1F1B, PipeDream-flush (Narayanan et al., 2021): stage s runs S-s-1 warm-up forwards, then one
// forward and one backward in turn, then the remaining backwards. Stage s holds min(M, S - s)
// micro-batches at once, and the step computes what GPipe computes.
//
//   s0: F0 F1 F2 B0 F3 B1 B2 B3
//   s1: F0 F1 B0 F2 B1 F3 B2 B3   (S = 3, M = 4)
//   s2: F0 B0 F1 B1 F2 B2 F3 B3
#include <algorithm>

#include "scheduler/schedule.h"

namespace pipetrain {
namespace {

std::vector<Op> one_f_one_b_stage(int s, int num_stages, int m) {
  const int warmup = std::min(num_stages - s - 1, m);
  std::vector<Op> ops;
  int next_forward = 0;
  int next_backward = 0;
  for (; next_forward < warmup; ++next_forward) ops.push_back({OpKind::kForward, next_forward});
  while (next_forward < m) {
    ops.push_back({OpKind::kForward, next_forward++});
    ops.push_back({OpKind::kBackward, next_backward++});
  }
  while (next_backward < m) ops.push_back({OpKind::kBackward, next_backward++});
  return ops;
}

}  // namespace

extern const ScheduleDef kSchedule_one_f_one_b;  // listed in the registry by CMake (scheduler/CMakeLists.txt)
const ScheduleDef kSchedule_one_f_one_b = {"1f1b", "1F1B", one_f_one_b_stage};

}  // namespace pipetrain
