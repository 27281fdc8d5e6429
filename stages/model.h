// The pipetrain transformer: a GPT-style decoder as an ordered list of layers.
//
//   [embed, block 0, ..., block L-1, head]
//   embed: token embedding + learned positions          tokens [B,T] int64 -> [B,T,H]
//   block: x + attn(ln1(x)); x + mlp(ln2(x))             [B,T,H] -> [B,T,H] (pre-LayerNorm, causal)
//   head:  final LayerNorm + LM head (no bias)           [B,T,H] -> logits [B,T,V]
//
// Every layer is built by build_layer(model, i, seed) from its own random stream, derived from the
// seed and the layer's index, so a pipeline stage that builds only layers a..b gets exactly the
// weights the whole model would have: splitting never changes the mathematics.
//
//   GptModel net(config, /*seed=*/1234);
//   torch::Tensor logits = net->forward(tokens);
//   torch::Tensor loss = lm_loss(logits, targets);
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "memory/model_config.h"

namespace pipetrain {

torch::Dtype to_torch_dtype(Dtype dtype);

// One entry of the ordered layer list.
class LayerImpl : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;
};

class EmbedImpl : public LayerImpl {
 public:
  explicit EmbedImpl(const ModelConfig& model);
  torch::Tensor forward(const torch::Tensor& tokens) override;
  // Tokens at positions start, start+1, ... (decoding with a KV cache).
  torch::Tensor forward_at(const torch::Tensor& tokens, int64_t start);

  torch::nn::Embedding tokens{nullptr};
  torch::nn::Embedding positions{nullptr};
};

// A block's keys and values for every position it has seen, [B, heads, positions, head_dim] each;
// undefined before the first.
struct KvCache {
  torch::Tensor keys;
  torch::Tensor values;
};

class BlockImpl : public LayerImpl {
 public:
  explicit BlockImpl(const ModelConfig& model);
  torch::Tensor forward(const torch::Tensor& x) override;
  // x holds the positions after those in `cache`, which it attends to as well; their keys and
  // values are appended to it. The same mathematics as forward() over the whole prefix.
  torch::Tensor forward_cached(const torch::Tensor& x, KvCache& cache);

  int64_t num_heads;
  torch::nn::LayerNorm ln1{nullptr};
  torch::nn::Linear qkv{nullptr};
  torch::nn::Linear attn_out{nullptr};
  torch::nn::LayerNorm ln2{nullptr};
  torch::nn::Linear fc_in{nullptr};
  torch::nn::Linear fc_out{nullptr};

 private:
  torch::Tensor run(const torch::Tensor& x, KvCache* cache);
};

class HeadImpl : public LayerImpl {
 public:
  explicit HeadImpl(const ModelConfig& model);
  torch::Tensor forward(const torch::Tensor& x) override;

  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear lm_head{nullptr};
};

// Builds layer i (0 = embed, 1..L = blocks, L+1 = head) on the CPU in model.dtype, initialised
// deterministically from (seed, i): normal(0, 0.02) weights, residual projections scaled by
// 1/sqrt(2L) as in GPT-2, zero biases, unit LayerNorm gains.
std::shared_ptr<LayerImpl> build_layer(const ModelConfig& model, int64_t i, uint64_t seed);

// A contiguous range [first, last] of the layer list, run one after another. The whole model is the
// range [0, L+1]; a pipeline stage is any sub-range.
class LayerRangeImpl : public torch::nn::Module {
 public:
  LayerRangeImpl(const ModelConfig& model, int64_t first, int64_t last, uint64_t seed);
  torch::Tensor forward(torch::Tensor x);

  int64_t first() const { return first_; }
  int64_t last() const { return last_; }
  const std::vector<std::shared_ptr<LayerImpl>>& layers() const { return layers_; }

 private:
  int64_t first_;
  int64_t last_;
  std::vector<std::shared_ptr<LayerImpl>> layers_;
};
TORCH_MODULE(LayerRange);

// The whole model: every layer in one range.
LayerRange make_gpt_model(const ModelConfig& model, uint64_t seed);

// Decoding one position at a time: the whole model with a KV cache per block, so each new position
// costs one position's compute, not the prefix's. Positions are the model's learned ones, so at
// most seq_len fit; the caller starts again (reset) with a shorter context when they run out.
//
//   CachedDecoder decoder(model);                          // make_gpt_model(...), weights loaded
//   torch::Tensor logits = decoder.forward(prompt);        // [1, t, V]
//   logits = decoder.forward(next_token.view({1, 1}));      // [1, 1, V], position t
class CachedDecoder {
 public:
  explicit CachedDecoder(LayerRange model);
  // `tokens` [B, t]: the next t positions; their logits [B, t, V]. InputError past seq_len.
  torch::Tensor forward(const torch::Tensor& tokens);
  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }
  void reset();

 private:
  LayerRange model_;
  std::vector<KvCache> caches_;
  int64_t length_ = 0;
  int64_t capacity_ = 0;
};

// Mean next-token cross-entropy: logits [B,T,V], targets [B,T] int64. Computed in float32 at least.
torch::Tensor lm_loss(const torch::Tensor& logits, const torch::Tensor& targets);

}  // namespace pipetrain
