#include "memory/model_desc.h"

#include "memory/param_count.h"

#include <algorithm>

namespace pipetrain {

namespace {

constexpr int64_t kTokenIdBytes = 8;  // int64
constexpr int64_t kFloatBytes = 4;

}  // namespace

ModelDesc describe_model(const ModelConfig& m) {
  ModelDesc desc{m, {}};
  const int64_t d = dtype_bytes(m.dtype);
  const int64_t h = m.hidden_dim, i = m.intermediate_size, t = m.seq_len, n = m.num_heads, v = m.vocab_size;
  const double hd = static_cast<double>(h);

  for (int64_t index = 0; index < m.num_model_layers(); ++index) {
    LayerCost c;
    c.name = layer_name(m, index);
    c.params = layer_param_count(m, index);
    switch (layer_at(m, index).kind) {
      case LayerKind::kEmbed:
        c.forward_flops_per_token = hd;
        c.backward_flops_per_token = hd;
        c.saved_bytes_per_token = kTokenIdBytes;
        c.transient_bytes_per_token = 0;
        c.transient_bytes_fixed = d * v * h;
        c.input_bytes_per_token = kTokenIdBytes;
        c.output_bytes_per_token = d * h;
        break;
      case LayerKind::kBlock: {
        const double flops = 8.0 * hd * hd + 4.0 * hd * static_cast<double>(i) + 4.0 * static_cast<double>(t) * hd;
        c.forward_flops_per_token = flops;
        c.backward_flops_per_token = 2.0 * flops;
        c.saved_bytes_per_token = d * (8 * h + 2 * i + n * t) + 4 * kFloatBytes;
        c.transient_bytes_per_token = d * n * t;
        c.transient_bytes_fixed = d * std::max(h * i, 3 * h * h);
        c.input_bytes_per_token = d * h;
        c.output_bytes_per_token = d * h;
        break;
      }
      case LayerKind::kHead: {
        const double flops = 2.0 * hd * static_cast<double>(v);
        c.forward_flops_per_token = flops;
        c.backward_flops_per_token = 2.0 * flops;
        c.saved_bytes_per_token = d * 2 * h + kFloatBytes * v + 2 * kFloatBytes;
        c.transient_bytes_per_token = 2 * kFloatBytes * v;
        c.transient_bytes_fixed = d * h * v;
        c.input_bytes_per_token = d * h;
        c.output_bytes_per_token = 0;  // the loss: one scalar per micro-batch
        break;
      }
    }
    desc.layers.push_back(c);
  }
  return desc;
}

}  // namespace pipetrain
