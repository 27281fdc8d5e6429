// stages/model: shapes, causal masking, gradients against finite differences, parameter counts
// against the closed formula in memory/, and deterministic per-layer initialisation.
#include <doctest/doctest.h>
#include <torch/torch.h>

#include "memory/param_count.h"
#include "stages/model.h"
#include "stages/optimizers/optimizer_impl.h"
#include "stages/stage.h"

using namespace pipetrain;

namespace {

ModelConfig tiny_config() {
  ModelConfig m;
  m.vocab_size = 256;
  m.hidden_dim = 16;
  m.num_layers = 2;
  m.num_heads = 4;
  m.intermediate_size = 32;
  m.seq_len = 12;
  return m;
}

torch::Tensor random_tokens(int64_t rows, int64_t t, int64_t seed) {
  torch::manual_seed(static_cast<uint64_t>(seed));
  return torch::randint(0, 256, {rows, t}, torch::kLong);
}

}  // namespace

// Each layer maps the shapes of the ordered list: tokens -> [B,T,H] -> [B,T,H] -> [B,T,V].
TEST_CASE("layer output shapes") {
  const ModelConfig m = tiny_config();
  LayerRange model = make_gpt_model(m, 1);
  const torch::Tensor tokens = random_tokens(3, m.seq_len, 0);
  const torch::Tensor hidden = model->layers()[0]->forward(tokens);
  CHECK(hidden.sizes() == torch::IntArrayRef({3, m.seq_len, m.hidden_dim}));
  CHECK(model->layers()[1]->forward(hidden).sizes() == hidden.sizes());
  CHECK(model->forward(tokens).sizes() == torch::IntArrayRef({3, m.seq_len, m.vocab_size}));
  // Shorter sequences than seq_len work too (positions are a prefix).
  CHECK(model->forward(tokens.narrow(1, 0, 5)).sizes() == torch::IntArrayRef({3, 5, m.vocab_size}));
}

// Changing a future token leaves every earlier position's logits unchanged, and changes later ones.
TEST_CASE("attention is causal") {
  const ModelConfig m = tiny_config();
  LayerRange model = make_gpt_model(m, 2);
  torch::NoGradGuard no_grad;
  torch::Tensor tokens = random_tokens(2, m.seq_len, 1);
  const torch::Tensor before = model->forward(tokens);
  const int64_t changed = 7;
  tokens.index_put_({torch::indexing::Slice(), changed}, (tokens.index({torch::indexing::Slice(), changed}) + 1) % 256);
  const torch::Tensor after = model->forward(tokens);
  using torch::indexing::Slice;
  CHECK_MESSAGE(torch::allclose(before.index({Slice(), Slice(0, changed)}), after.index({Slice(), Slice(0, changed)}),
                                0.0, 1e-6),
                "positions before the change must not see it");
  CHECK_MESSAGE(!torch::allclose(before.index({Slice(), Slice(changed)}), after.index({Slice(), Slice(changed)}), 0.0,
                                 1e-4),
                "positions from the change on must see it");
}

// 16-bit logits: the loss is taken in float32 (the 16-bit values widened first, exactly), and its
// gradient comes back in the logits' dtype.
TEST_CASE("the loss of 16-bit logits is computed in float32") {
  torch::manual_seed(5);
  const torch::Tensor targets = torch::randint(0, 256, {2, 7});
  for (torch::Dtype type : {torch::kBFloat16, torch::kHalf}) {
    const std::string name = c10::toString(type);
    CAPTURE(name);
    const torch::Tensor logits = (torch::randn({2, 7, 256}) * 4).to(type).requires_grad_(true);
    const torch::Tensor loss = lm_loss(logits, targets);
    CHECK(std::string(c10::toString(loss.scalar_type())) == "Float");
    CHECK(loss.item<float>() == lm_loss(logits.detach().to(torch::kFloat32), targets).item<float>());
    loss.backward();
    CHECK(std::string(c10::toString(logits.grad().scalar_type())) == name);
  }
}

// Backpropagation agrees with central finite differences (float64, eps 1e-6, relative 1e-5) on
// entries of every parameter tensor.
TEST_CASE("gradients match finite differences") {
  ModelConfig m = tiny_config();
  m.hidden_dim = 8;
  m.num_heads = 2;
  m.intermediate_size = 12;
  m.seq_len = 5;
  m.dtype = Dtype::kFloat64;
  LayerRange model = make_gpt_model(m, 3);
  const torch::Tensor tokens = random_tokens(2, m.seq_len + 1, 2);
  const torch::Tensor inputs = tokens.narrow(1, 0, m.seq_len), targets = tokens.narrow(1, 1, m.seq_len);
  auto loss_value = [&] { return lm_loss(model->forward(inputs), targets); };

  model->zero_grad();
  loss_value().backward();
  constexpr double kEps = 1e-6;
  int checked = 0;
  for (const auto& item : model->named_parameters()) {
    torch::Tensor p = item.value();
    const torch::Tensor flat = p.view({-1});
    for (int64_t idx : {int64_t{0}, flat.numel() / 2, flat.numel() - 1}) {
      const double analytic = p.grad().view({-1})[idx].item<double>();
      double numeric = 0.0;
      {
        torch::NoGradGuard no_grad;
        const double original = flat[idx].item<double>();
        flat[idx] = original + kEps;
        const double plus = loss_value().item<double>();
        flat[idx] = original - kEps;
        const double minus = loss_value().item<double>();
        flat[idx] = original;
        numeric = (plus - minus) / (2 * kEps);
      }
      CHECK_MESSAGE(analytic == doctest::Approx(numeric).epsilon(1e-5).scale(1e-4),
                    item.key() << "[" << idx << "]: backprop " << analytic << ", finite difference " << numeric);
      ++checked;
    }
  }
  CHECK(checked > 30);
}

// numel() of every layer equals the closed formula the planner uses, for several shapes.
TEST_CASE("parameter counts equal the closed formula in memory/") {
  for (const auto& [h, layers, heads, inter, t] :
       std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t>>{
           {16, 2, 4, 32, 12}, {64, 3, 8, 256, 64}, {48, 1, 6, 100, 7}, {256, 4, 4, 1024, 128}}) {
    ModelConfig m;
    m.hidden_dim = h;
    m.num_layers = layers;
    m.num_heads = heads;
    m.intermediate_size = inter;
    m.seq_len = t;
    LayerRange model = make_gpt_model(m, 0);
    int64_t total = 0;
    for (int64_t i = 0; i < m.num_model_layers(); ++i) {
      int64_t numel = 0;
      for (const torch::Tensor& p : model->layers()[static_cast<size_t>(i)]->parameters()) numel += p.numel();
      CHECK_MESSAGE(numel == layer_param_count(m, i), layer_name(m, i) << " with H=" << h << " I=" << inter);
      total += numel;
    }
    CHECK(total == total_param_count(m));
  }
}

// A layer range built alone has exactly the weights of the same layers in the whole model, so a
// pipeline stage starts where the reference model starts; another seed gives other weights.
TEST_CASE("initialisation is deterministic per layer") {
  const ModelConfig m = tiny_config();
  LayerRange whole = make_gpt_model(m, 11);
  LayerRange again = make_gpt_model(m, 11);
  LayerRange middle(m, 1, 2, 11);
  LayerRange other = make_gpt_model(m, 12);
  const auto whole_params = whole->parameters();
  const auto again_params = again->parameters();
  const auto other_params = other->parameters();
  for (size_t i = 0; i < whole_params.size(); ++i) CHECK(torch::equal(whole_params[i], again_params[i]));
  CHECK(!torch::equal(whole_params[0], other_params[0]));
  for (int64_t i = 1; i <= 2; ++i) {
    const auto a = whole->layers()[static_cast<size_t>(i)]->parameters();
    const auto b = middle->layers()[static_cast<size_t>(i - 1)]->parameters();
    REQUIRE(a.size() == b.size());
    for (size_t k = 0; k < a.size(); ++k) CHECK(torch::equal(a[k], b[k]));
  }
}

// Every optimizer kind memory/ registers (what the planner sizes) has an implementation in
// stages/optimizers/, and each builds an optimizer whose checkpoint state round-trips.
TEST_CASE("every registered optimizer kind has an implementation") {
  const ModelConfig m = tiny_config();
  for (const OptimizerKind kind : OptimizerKind::all()) {
    CAPTURE(kind.name());
    OptimizerConfig config;
    config.kind = kind;
    if (kind.def().uses_momentum) config.momentum = 0.9;
    CHECK(std::string(optimizer_impl(kind).name) == kind.name());
    Stage stage(m, 1, 1, /*seed=*/7, StageOptions{torch::kCPU, false, config});
    for (torch::Tensor& p : stage.parameters()) p.mutable_grad() = torch::ones_like(p);
    stage.step(1e-3);
    const auto state = stage.layer_state(1);
    size_t state_tensors = 0;
    for (const auto& [name, tensor] : state) state_tensors += name.rfind("state/", 0) == 0 ? 1 : 0;
    CHECK_MESSAGE(state_tensors > 0, kind.name() << " keeps state after a step");
    Stage other(m, 1, 1, /*seed=*/8, StageOptions{torch::kCPU, false, config});
    other.set_layer_state(1, state);
    const auto again = other.layer_state(1);
    REQUIRE(again.size() == state.size());
    for (size_t i = 0; i < state.size(); ++i) {
      CHECK(again[i].first == state[i].first);
      CHECK(torch::equal(again[i].second, state[i].second));
    }
  }
}

// Each Dtype maps to the LibTorch dtype of its name and size (float16 once threw "unknown Dtype").
TEST_CASE("every Dtype has a LibTorch dtype of its size") {
  for (const Dtype d : {Dtype::kFloat32, Dtype::kFloat64, Dtype::kBFloat16, Dtype::kFloat16}) {
    const std::string name = dtype_name(d);
    CAPTURE(name);
    CHECK(torch::empty({1}, to_torch_dtype(d)).element_size() == dtype_bytes(d));
  }
  CHECK((to_torch_dtype(Dtype::kFloat16) == torch::kHalf));
  CHECK((to_torch_dtype(Dtype::kBFloat16) == torch::kBFloat16));
}

// GPT-2's initialisation, read back from the parameters: weights normal(0, 0.02), the residual
// projections (attn_out, fc_out) normal(0, 0.02 / sqrt(2L)), biases 0, LayerNorm gains 1 and
// shifts 0. Tolerances: a sample of n values has a standard deviation within a few percent of the
// true one at these sizes (n >= 65,536: 3% is over 10 standard errors).
TEST_CASE("initialisation has the stated statistics") {
  ModelConfig m;
  m.vocab_size = 256;
  m.hidden_dim = 256;
  m.num_layers = 8;
  m.num_heads = 4;
  m.intermediate_size = 1024;
  m.seq_len = 256;
  const LayerRange model = make_gpt_model(m, 99);
  const double residual = 0.02 / std::sqrt(2.0 * 8);
  int checked = 0;
  for (const auto& item : model->named_parameters(/*recurse=*/true)) {
    const std::string& name = item.key();
    const torch::Tensor p = item.value().to(torch::kFloat64);
    CAPTURE(name);
    if (name.find("ln") != std::string::npos || name.find("norm") != std::string::npos) {
      CHECK(torch::equal(p, name.find("weight") != std::string::npos ? torch::ones_like(p) : torch::zeros_like(p)));
    } else if (name.find("bias") != std::string::npos) {
      CHECK(p.abs().max().item<double>() == 0.0);
    } else {
      const bool is_residual = name.find("attn_out") != std::string::npos || name.find("fc_out") != std::string::npos;
      const double want = is_residual ? residual : 0.02;
      CHECK(p.numel() >= 65536);
      CHECK(p.std().item<double>() == doctest::Approx(want).epsilon(0.03));
      CHECK(std::abs(p.mean().item<double>()) < want * 0.02);
      ++checked;
    }
  }
  CHECK(checked == 2 + 4 * 8 + 1);  // embeddings, 4 matrices per block, the LM head
}
