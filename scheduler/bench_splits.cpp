#include "scheduler/bench_splits.h"

#include <stdexcept>

#include "scheduler/planner.h"
#include "scheduler/splits.h"
#include "scheduler/statistics.h"

namespace pipetrain {

SplitList every_split(const ModelConfig& model, const HardwareSpec& hardware, const std::vector<Shape>& shapes,
                      size_t cap) {
  std::vector<StageMap> all;
  for (const Shape& shape : shapes) {
    const auto splits = core_splits(shape, hardware, /*choose=*/true);
    for_each_cut(model.num_model_layers(), static_cast<int>(shape.size()), 1, [&](const std::vector<int64_t>& last) {
      for (const auto& cores : splits) {
        for (const auto& lanes : lane_splits(shape, cores, hardware, /*choose=*/true)) {
          all.push_back(make_stage_map(shape, last, cores, lanes));
        }
      }
    });
  }
  SplitList out;
  out.total = all.size();
  if (cap == 0 || all.size() <= cap) {
    out.maps = std::move(all);
    return out;
  }
  for (size_t k = 0; k < cap; ++k) {
    const size_t index = cap == 1 ? 0 : k * (all.size() - 1) / (cap - 1);
    out.maps.push_back(all[index]);
  }
  return out;
}

StageMap naive_version(const StageMap& map) {
  StageMap naive = map;
  for (StageSpec& st : naive.stages) {
    if (st.device.is_cpu()) st.cores = 0;
    st.lanes = 1;
  }
  return naive;
}

std::string split_label(const ModelConfig& model, const StageMap& map) {
  std::string label;
  for (int s = 0; s < map.num_stages(); ++s) {
    const StageSpec& st = map.stages[static_cast<size_t>(s)];
    if (!label.empty()) label += " | ";
    label += st.device.name() + (st.cores > 0 ? "[" + std::to_string(st.cores) + "c]" : "") +
             (st.lanes > 1 ? "(" + std::to_string(st.lanes) + " lanes)" : "") + " " +
             describe_range(model, st.first, st.last);
  }
  return label;
}

StepStats summarize_steps(const std::vector<double>& step_seconds, int64_t tokens_per_step, int warmup) {
  if (warmup < 0 || static_cast<size_t>(warmup) >= step_seconds.size()) {
    throw std::invalid_argument("summarize_steps: " + std::to_string(step_seconds.size()) + " steps leave none after " +
                                std::to_string(warmup) + " warm-up steps");
  }
  const std::vector<double> kept(step_seconds.begin() + warmup, step_seconds.end());
  StepStats out;
  out.measured = static_cast<int>(kept.size());
  out.median_step_seconds = median(kept);
  out.median_tokens_per_s = static_cast<double>(tokens_per_step) / out.median_step_seconds;
  return out;
}

}  // namespace pipetrain
