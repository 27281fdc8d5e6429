// Layer-major: what a streamed segment runs (memory/stage_map.h). Each stage takes all M
// micro-batches forward, then all M backward, like GPipe; a streamed stage runs each of those halves
// layer by layer, every layer over all M micro-batches while its weights are on the GPU, so its
// weights cross the link once forward and once backward per step instead of once per micro-batch:
//
//   s0 (resident): F0 F1 F2 F3 B0 B1 B2 B3          (S = 2, M = 4)
//   s1 (streamed): F0 F1 F2 F3 B0 B1 B2 B3, run as  L0[F0 F1 F2 F3] L1[F0..F3] ... then
//                                                   Ln[B0 B1 B2 B3] ... L0[B0..B3]
//
// The simulator replays a streamed stage's halves as blocks (scheduler/simulator.h): the block
// starts once all M inputs are there, and hands all M outputs on when its last layer is done.
#include "scheduler/schedule.h"

namespace pipetrain {
namespace {

std::vector<Op> layer_major_stage(int /*stage*/, int /*num_stages*/, int m) {
  std::vector<Op> ops;
  for (int k = 0; k < m; ++k) ops.push_back({OpKind::kForward, k});
  for (int k = 0; k < m; ++k) ops.push_back({OpKind::kBackward, k});
  return ops;
}

}  // namespace

extern const ScheduleDef kSchedule_layer_major;  // listed in the registry by CMake (scheduler/CMakeLists.txt)
const ScheduleDef kSchedule_layer_major = {"layer-major", "layer-major", layer_major_stage};

}  // namespace pipetrain
