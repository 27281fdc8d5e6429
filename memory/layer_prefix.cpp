#include "memory/layer_prefix.h"

#include <algorithm>

#include "memory/estimate.h"

namespace pipetrain {
namespace {

std::vector<std::vector<int64_t>> sparse_table(const std::vector<int64_t>& values) {
  std::vector<std::vector<int64_t>> table{values};
  for (size_t width = 2; width <= values.size(); width *= 2) {
    const auto& prev = table.back();
    std::vector<int64_t> level(values.size() - width + 1);
    for (size_t i = 0; i < level.size(); ++i) level[i] = std::max(prev[i], prev[i + width / 2]);
    table.push_back(std::move(level));
  }
  return table;
}

}  // namespace

LayerPrefix::LayerPrefix(const ModelDesc& model) : layers_(model.layers) {
  const size_t n = layers_.size();
  params_.assign(n + 1, 0);
  saved_.assign(n + 1, 0);
  inputs_.assign(n + 1, 0);
  forward_.assign(n + 1, 0.0);
  backward_.assign(n + 1, 0.0);
  std::vector<int64_t> transient(n), fixed(n), layer(n), params(n);
  for (size_t i = 0; i < n; ++i) {
    const LayerCost& c = layers_[i];
    params_[i + 1] = checked_add(params_[i], c.params, "parameter count");
    saved_[i + 1] = checked_add(saved_[i], c.saved_bytes_per_token, "saved activation bytes");
    inputs_[i + 1] = checked_add(inputs_[i], c.input_bytes_per_token, "layer input bytes");
    forward_[i + 1] = forward_[i] + c.forward_flops_per_token;
    backward_[i + 1] = backward_[i] + c.backward_flops_per_token;
    transient[i] = c.transient_bytes_per_token;
    fixed[i] = c.transient_bytes_fixed;
    layer[i] = checked_add(c.saved_bytes_per_token, c.transient_bytes_per_token, "layer bytes");
    params[i] = c.params;
  }
  transient_max_ = sparse_table(transient);
  fixed_max_ = sparse_table(fixed);
  layer_max_ = sparse_table(layer);
  params_max_ = sparse_table(params);
}

int64_t LayerPrefix::range_max(const std::vector<std::vector<int64_t>>& table, int64_t first, int64_t last) const {
  const int64_t width = last - first + 1;
  size_t level = 0;
  while ((int64_t{2} << level) <= width) ++level;
  const int64_t span = int64_t{1} << level;
  return std::max(table[level][static_cast<size_t>(first)], table[level][static_cast<size_t>(last - span + 1)]);
}

RangeCosts LayerPrefix::range(int64_t first, int64_t last) const {
  RangeCosts r;
  const auto a = static_cast<size_t>(first), b = static_cast<size_t>(last + 1);
  r.params = params_[b] - params_[a];
  r.saved_bytes_per_token = saved_[b] - saved_[a];
  r.input_bytes_per_token_sum = inputs_[b] - inputs_[a];
  r.forward_flops_per_token = forward_[b] - forward_[a];
  r.backward_flops_per_token = backward_[b] - backward_[a];
  r.max_transient_bytes_per_token = range_max(transient_max_, first, last);
  r.max_transient_bytes_fixed = range_max(fixed_max_, first, last);
  r.max_layer_bytes_per_token = range_max(layer_max_, first, last);
  r.max_layer_params = range_max(params_max_, first, last);
  r.input_bytes_per_token = layers_[a].input_bytes_per_token;
  r.output_bytes_per_token = layers_[static_cast<size_t>(last)].output_bytes_per_token;
  return r;
}

}  // namespace pipetrain
