// O(1) totals over any contiguous layer range, for the planner's millions of candidate stages.
//
//   LayerPrefix prefix(describe_model(cfg));
//   LayerRange r = prefix.range(1, 8);   // blocks 0..7
//   r.params; r.forward_flops_per_token; r.max_transient_bytes_per_token;
#pragma once

#include <cstdint>
#include <vector>

#include "memory/model_desc.h"

namespace pipetrain {

struct RangeCosts {
  int64_t params = 0;
  double forward_flops_per_token = 0.0;
  double backward_flops_per_token = 0.0;
  int64_t saved_bytes_per_token = 0;
  int64_t input_bytes_per_token_sum = 0;       // Σ layer inputs (kept per micro-batch under checkpointing)
  int64_t max_transient_bytes_per_token = 0;
  int64_t max_transient_bytes_fixed = 0;
  int64_t max_layer_bytes_per_token = 0;       // max over layers of saved + transient
  int64_t max_layer_params = 0;                // the largest layer's parameters
  int64_t input_bytes_per_token = 0;           // of the first layer: what the range receives
  int64_t output_bytes_per_token = 0;          // of the last layer: what it hands on
};

class LayerPrefix {
 public:
  explicit LayerPrefix(const ModelDesc& model);
  // Totals over layers [first, last] (inclusive; 0 = embed). Sums are overflow-checked when built.
  RangeCosts range(int64_t first, int64_t last) const;
  // Entries of the layer list, embed and head included (ModelConfig::num_model_layers).
  int64_t num_model_layers() const { return static_cast<int64_t>(layers_.size()); }

 private:
  int64_t range_max(const std::vector<std::vector<int64_t>>& table, int64_t first, int64_t last) const;

  std::vector<LayerCost> layers_;
  std::vector<int64_t> params_, saved_, inputs_;  // prefix sums, size n + 1
  std::vector<double> forward_, backward_;
  std::vector<std::vector<int64_t>> transient_max_, fixed_max_, layer_max_, params_max_;  // sparse tables
};

}  // namespace pipetrain
