#include "memory/param_count.h"

#include <stdexcept>
#include <string>

#include "memory/errors.h"

namespace pipetrain {

int64_t dtype_bytes(Dtype dtype) {
  switch (dtype) {
    case Dtype::kFloat32: return 4;
    case Dtype::kFloat64: return 8;
    case Dtype::kBFloat16: return 2;
    case Dtype::kFloat16: return 2;
  }
  throw std::logic_error("unknown Dtype");
}

bool is_16_bit(Dtype dtype) { return dtype == Dtype::kBFloat16 || dtype == Dtype::kFloat16; }

ModelConfig with_dtype(ModelConfig model, Dtype dtype) {
  model.dtype = dtype;
  return model;
}

std::string dtype_name(Dtype dtype) {
  switch (dtype) {
    case Dtype::kFloat32: return "float32";
    case Dtype::kFloat64: return "float64";
    case Dtype::kBFloat16: return "bfloat16";
    case Dtype::kFloat16: return "float16";
  }
  throw std::logic_error("unknown Dtype");
}

Dtype parse_dtype(const std::string& name, const std::string& what) {
  if (name == "float32" || name == "fp32") return Dtype::kFloat32;
  if (name == "float64" || name == "fp64") return Dtype::kFloat64;
  if (name == "bfloat16" || name == "bf16") return Dtype::kBFloat16;
  if (name == "float16" || name == "fp16") return Dtype::kFloat16;
  throw InputError(what + " is '" + name + "'; expected one of float32, float64, bfloat16, float16");
}

std::string architecture_key(const ModelConfig& m) {
  return "V" + std::to_string(m.vocab_size) + " H" + std::to_string(m.hidden_dim) + " L" + std::to_string(m.num_layers) +
         " A" + std::to_string(m.num_heads) + " I" + std::to_string(m.intermediate_size) + " T" + std::to_string(m.seq_len) +
         " " + dtype_name(m.dtype);
}

LayerId layer_at(const ModelConfig& model, int64_t i) {
  if (i < 0 || i >= model.num_model_layers()) {
    throw std::out_of_range("layer " + std::to_string(i) + " is outside 0.." +
                            std::to_string(head_layer(model)));
  }
  if (i == kEmbedLayer) return {LayerKind::kEmbed, -1};
  if (is_head_layer(model, i)) return {LayerKind::kHead, -1};
  return {LayerKind::kBlock, i - block_layer(0)};
}

std::string layer_name(const ModelConfig& model, int64_t i) {
  const LayerId id = layer_at(model, i);
  switch (id.kind) {
    case LayerKind::kEmbed: return "embed";
    case LayerKind::kHead: return "head";
    case LayerKind::kBlock: return "block " + std::to_string(id.block_index);
  }
  throw std::logic_error("unknown LayerKind");
}

int64_t embed_param_count(const ModelConfig& m) {
  return m.vocab_size * m.hidden_dim + m.seq_len * m.hidden_dim;
}

int64_t block_param_count(const ModelConfig& m) {
  const int64_t h = m.hidden_dim;
  const int64_t i = m.intermediate_size;
  return 4 * h * h + 2 * h * i + 9 * h + i;
}

int64_t head_param_count(const ModelConfig& m) { return 2 * m.hidden_dim + m.hidden_dim * m.vocab_size; }

int64_t layer_param_count(const ModelConfig& model, int64_t i) {
  switch (layer_at(model, i).kind) {
    case LayerKind::kEmbed: return embed_param_count(model);
    case LayerKind::kHead: return head_param_count(model);
    case LayerKind::kBlock: return block_param_count(model);
  }
  throw std::logic_error("unknown LayerKind");
}

int64_t total_param_count(const ModelConfig& model) {
  return embed_param_count(model) + model.num_layers * block_param_count(model) + head_param_count(model);
}

}  // namespace pipetrain
