#include "stages/model.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/init.h>

#include <cmath>
#include <string>
#include <utility>

#include "memory/errors.h"

namespace pipetrain {

torch::Dtype to_torch_dtype(Dtype dtype) {
  switch (dtype) {
    case Dtype::kFloat32: return torch::kFloat32;
    case Dtype::kFloat64: return torch::kFloat64;
    case Dtype::kBFloat16: return torch::kBFloat16;
    case Dtype::kFloat16: return torch::kHalf;
  }
  throw std::logic_error("unknown Dtype");
}

EmbedImpl::EmbedImpl(const ModelConfig& model) {
  tokens = register_module("tokens", torch::nn::Embedding(model.vocab_size, model.hidden_dim));
  positions = register_module("positions", torch::nn::Embedding(model.seq_len, model.hidden_dim));
}

torch::Tensor EmbedImpl::forward(const torch::Tensor& token_ids) { return forward_at(token_ids, 0); }

torch::Tensor EmbedImpl::forward_at(const torch::Tensor& token_ids, int64_t start) {
  const int64_t t = token_ids.size(1);
  torch::Tensor pos =
      torch::arange(start, start + t, torch::TensorOptions().dtype(torch::kLong).device(token_ids.device()));
  return tokens->forward(token_ids) + positions->forward(pos).unsqueeze(0);
}

BlockImpl::BlockImpl(const ModelConfig& model) : num_heads(model.num_heads) {
  const int64_t h = model.hidden_dim;
  ln1 = register_module("ln1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({h})));
  qkv = register_module("qkv", torch::nn::Linear(h, 3 * h));
  attn_out = register_module("attn_out", torch::nn::Linear(h, h));
  ln2 = register_module("ln2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({h})));
  fc_in = register_module("fc_in", torch::nn::Linear(h, model.intermediate_size));
  fc_out = register_module("fc_out", torch::nn::Linear(model.intermediate_size, h));
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x) { return run(x, nullptr); }

torch::Tensor BlockImpl::forward_cached(const torch::Tensor& x, KvCache& cache) { return run(x, &cache); }

torch::Tensor BlockImpl::run(const torch::Tensor& x, KvCache* cache) {
  const int64_t b = x.size(0), t = x.size(1), h = x.size(2);
  const int64_t head_dim = h / num_heads;

  // Causal self-attention: [B,T,3H] -> three [B,heads,T,head_dim].
  auto parts = qkv->forward(ln1->forward(x)).view({b, t, 3, num_heads, head_dim}).permute({2, 0, 3, 1, 4});
  torch::Tensor q = parts[0], k = parts[1], v = parts[2];
  int64_t past = 0;
  if (cache != nullptr) {
    if (cache->keys.defined()) {
      past = cache->keys.size(2);
      k = torch::cat({cache->keys, k}, 2);
      v = torch::cat({cache->values, v}, 2);
    }
    cache->keys = k;
    cache->values = v;
  }
  torch::Tensor scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(head_dim));
  // Query i (position past + i) sees keys 0..past + i.
  torch::Tensor future =
      torch::ones({t, past + t}, torch::TensorOptions().dtype(torch::kBool).device(x.device())).triu(1 + past);
  scores = scores.masked_fill(future, -std::numeric_limits<double>::infinity());
  torch::Tensor attended = torch::matmul(torch::softmax(scores, -1), v);
  attended = attended.transpose(1, 2).reshape({b, t, h});
  torch::Tensor y = x + attn_out->forward(attended);

  return y + fc_out->forward(torch::gelu(fc_in->forward(ln2->forward(y))));
}

HeadImpl::HeadImpl(const ModelConfig& model) {
  norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({model.hidden_dim})));
  lm_head = register_module("lm_head", torch::nn::Linear(torch::nn::LinearOptions(model.hidden_dim, model.vocab_size).bias(false)));
}

torch::Tensor HeadImpl::forward(const torch::Tensor& x) { return lm_head->forward(norm->forward(x)); }

namespace {

// splitmix64: decorrelates the per-layer streams of nearby seeds and indices.
uint64_t mix_seed(uint64_t seed, uint64_t index) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ULL * (index + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

constexpr double kInitStd = 0.02;

void init_layer(LayerImpl& layer, int64_t num_blocks, at::Generator& gen) {
  torch::NoGradGuard no_grad;
  const double residual_std = kInitStd / std::sqrt(2.0 * static_cast<double>(num_blocks));
  for (const auto& item : layer.named_parameters(/*recurse=*/true)) {
    const std::string& name = item.key();
    torch::Tensor p = item.value();
    const bool is_norm = name.find("ln") == 0 || name.find("norm") == 0;
    if (is_norm) {
      p.fill_(name.find("weight") != std::string::npos ? 1.0 : 0.0);
    } else if (name.find("bias") != std::string::npos) {
      p.zero_();
    } else if (name.find("attn_out") == 0 || name.find("fc_out") == 0) {
      p.normal_(0.0, residual_std, gen);
    } else {
      p.normal_(0.0, kInitStd, gen);
    }
  }
}

}  // namespace

std::shared_ptr<LayerImpl> build_layer(const ModelConfig& model, int64_t i, uint64_t seed) {
  std::shared_ptr<LayerImpl> layer;
  switch (layer_at(model, i).kind) {
    case LayerKind::kEmbed: layer = std::make_shared<EmbedImpl>(model); break;
    case LayerKind::kBlock: layer = std::make_shared<BlockImpl>(model); break;
    case LayerKind::kHead: layer = std::make_shared<HeadImpl>(model); break;
  }
  // Parameters are created in float32 and drawn from a float32 stream, then cast, so that a float64
  // model starts from the same values as a float32 one.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(mix_seed(seed, static_cast<uint64_t>(i)));
  init_layer(*layer, model.num_layers, gen);
  layer->to(to_torch_dtype(model.dtype));
  return layer;
}

LayerRangeImpl::LayerRangeImpl(const ModelConfig& model, int64_t first, int64_t last, uint64_t seed)
    : first_(first), last_(last) {
  if (first < kEmbedLayer || last > head_layer(model) || first > last) {
    throw std::out_of_range("layer range " + std::to_string(first) + ".." + std::to_string(last) +
                            " is not inside 0.." + std::to_string(head_layer(model)));
  }
  for (int64_t i = first; i <= last; ++i) {
    layers_.push_back(register_module("layer" + std::to_string(i), build_layer(model, i, seed)));
  }
}

torch::Tensor LayerRangeImpl::forward(torch::Tensor x) {
  for (const auto& layer : layers_) x = layer->forward(x);
  return x;
}

LayerRange make_gpt_model(const ModelConfig& model, uint64_t seed) {
  return LayerRange(model, kEmbedLayer, head_layer(model), seed);
}

CachedDecoder::CachedDecoder(LayerRange model) : model_(std::move(model)) {
  const auto& layers = model_->layers();
  if (model_->first() != kEmbedLayer || layers.size() < 2 || !std::dynamic_pointer_cast<HeadImpl>(layers.back())) {
    throw std::invalid_argument("CachedDecoder needs the whole model, embed to head");
  }
  capacity_ = std::dynamic_pointer_cast<EmbedImpl>(layers.front())->positions->weight.size(0);
  caches_.resize(layers.size());
}

torch::Tensor CachedDecoder::forward(const torch::Tensor& tokens) {
  const int64_t t = tokens.size(1);
  if (length_ + t > capacity_) {
    throw InputError("the decoder holds " + std::to_string(length_) + " positions; " + std::to_string(t) +
                     " more would pass the model's seq_len of " + std::to_string(capacity_));
  }
  const auto& layers = model_->layers();
  torch::Tensor x = std::static_pointer_cast<EmbedImpl>(layers.front())->forward_at(tokens, length_);
  for (size_t i = 1; i + 1 < layers.size(); ++i) {
    x = std::static_pointer_cast<BlockImpl>(layers[i])->forward_cached(x, caches_[i]);
  }
  length_ += t;
  return layers.back()->forward(x);
}

void CachedDecoder::reset() {
  for (auto& cache : caches_) cache = KvCache{};
  length_ = 0;
}

torch::Tensor lm_loss(const torch::Tensor& logits, const torch::Tensor& targets) {
  torch::Tensor flat = logits.reshape({-1, logits.size(-1)});
  // The loss in float32 at least: log-softmax over the vocabulary in 16 bits loses the small
  // probabilities, and its gradient flows back in the logits' dtype.
  if (flat.scalar_type() == torch::kBFloat16 || flat.scalar_type() == torch::kHalf) flat = flat.to(torch::kFloat32);
  return torch::nn::functional::cross_entropy(flat, targets.reshape({-1}));
}

}  // namespace pipetrain
