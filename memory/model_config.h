// The shape of a GPT-style decoder, as plain numbers.
//
// memory/ and scheduler/ reason about a model without LibTorch: this struct is what they see.
// The layer list is [embed, block 0 .. block L-1, head], so a model has L + 2 layers and any
// contiguous range of them can become a pipeline stage.
//
//   ModelConfig m;  m.hidden_dim = 256;  m.num_layers = 8;
//   int64_t n = total_param_count(m);      // exact, equals numel() of the LibTorch model
#pragma once

#include <cstdint>
#include <string>

namespace pipetrain {

enum class Dtype { kFloat32, kFloat64, kBFloat16, kFloat16 };

int64_t dtype_bytes(Dtype dtype);
std::string dtype_name(Dtype dtype);
// bfloat16 and float16: computing in them keeps float32 master weights where the optimizer lives.
bool is_16_bit(Dtype dtype);
// Throws InputError naming the value when `name` is not one of float32, float64, bfloat16, float16
// (`what` names the key in the message: "model.dtype").
Dtype parse_dtype(const std::string& name, const std::string& what = "model.dtype");

struct ModelConfig {
  int64_t vocab_size = 256;
  int64_t hidden_dim = 256;
  int64_t num_layers = 4;
  int64_t num_heads = 4;
  int64_t intermediate_size = 1024;
  int64_t seq_len = 128;
  Dtype dtype = Dtype::kFloat32;  // what layers compute in (memory/precision.h may choose per device)

  int64_t num_model_layers() const { return num_layers + 2; }  // embed + blocks + head
};

// What a layer of the ordered list is.
enum class LayerKind { kEmbed, kBlock, kHead };

struct LayerId {
  LayerKind kind;
  int64_t block_index;  // only meaningful for kBlock
};

// "V256 H256 L4 A4 I1024 T128 float32": the architecture, what must match for weights to load.
std::string architecture_key(const ModelConfig& model);

// The same model computing in `dtype`.
ModelConfig with_dtype(ModelConfig model, Dtype dtype);

// The layer list's indices, stated once: 0 is the embedding, 1..L the blocks, L+1 the head.
constexpr int64_t kEmbedLayer = 0;
inline int64_t block_layer(int64_t block) { return block + 1; }
inline int64_t head_layer(const ModelConfig& model) { return model.num_layers + 1; }
inline bool is_head_layer(const ModelConfig& model, int64_t i) { return i == head_layer(model); }

// Layer `i` of the ordered list (0 = embed, 1..L = blocks, L+1 = head).
LayerId layer_at(const ModelConfig& model, int64_t i);
// "embed", "block 3", "head".
std::string layer_name(const ModelConfig& model, int64_t i);

}  // namespace pipetrain
