// Every way to cut the layer list into contiguous stages: the one enumeration the planner, its
// remedies and `pipetrain bench` share.
//
//   for_each_cut(/*layers=*/6, /*stages=*/2, 1, [](const std::vector<int64_t>& last) { ... });
//   // last = {0, 5}, {1, 5}, ... {4, 5}: stage s ends at layer last[s]; the last stage at the head
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

namespace pipetrain {

// Calls visit(last) for every cut of `num_layers` layers into `num_stages` non-empty stages, in
// lexicographic order of `last`; with `stride` > 1, only every stride-th choice of each boundary
// (for huge layer counts, where only an approximate answer is wanted). Nothing when there are more
// stages than layers.
void for_each_cut(int64_t num_layers, int num_stages, int64_t stride,
                  const std::function<void(const std::vector<int64_t>& last)>& visit);

}  // namespace pipetrain
