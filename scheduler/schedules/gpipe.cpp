// GPipe (Huang et al., 2019): fill, then drain. Every stage runs all M forwards, then all M
// backwards, so every stage holds all M micro-batches' activations.
//
//   s0: F0 F1 F2 F3 B0 B1 B2 B3   (S = 3, M = 4; every stage alike)
#include "scheduler/schedule.h"

namespace pipetrain {
namespace {

std::vector<Op> gpipe_stage(int /*stage*/, int /*num_stages*/, int m) {
  std::vector<Op> ops;
  for (int k = 0; k < m; ++k) ops.push_back({OpKind::kForward, k});
  for (int k = 0; k < m; ++k) ops.push_back({OpKind::kBackward, k});
  return ops;
}

}  // namespace

extern const ScheduleDef kSchedule_gpipe;  // listed in the registry by CMake (scheduler/CMakeLists.txt)
const ScheduleDef kSchedule_gpipe = {"gpipe", "GPipe", gpipe_stage};

}  // namespace pipetrain
