// stages/: the streamed stage on the CPU stand-in device against the resident stage it replaces
// (transparency in float32 within 1e-6), its window's ordering rules, and the layerwise update.
#include <doctest/doctest.h>

#include <cmath>

#include "memory/estimate.h"
#include "memory/layer_prefix.h"
#include "memory/model_desc.h"
#include "stages/stage.h"
#include "stages/streamed_stage.h"
#include "stages/weight_stream.h"

using namespace pipetrain;

namespace {

ModelConfig tiny_model() {
  ModelConfig m;
  m.vocab_size = 64;
  m.hidden_dim = 32;
  m.num_layers = 3;
  m.num_heads = 2;
  m.intermediate_size = 64;
  m.seq_len = 16;
  return m;
}

constexpr uint64_t kSeed = 7;
constexpr int kMicroBatches = 3;

WeightStreamFactory stand_in() {
  return [](int slots, int64_t elements, torch::Dtype compute) {
    return std::make_unique<StandInWeightStream>(slots, elements, compute);
  };
}

std::vector<torch::Tensor> token_batches(const ModelConfig& m, uint64_t seed) {
  torch::manual_seed(seed);
  std::vector<torch::Tensor> out;
  for (int k = 0; k < kMicroBatches; ++k) out.push_back(torch::randint(m.vocab_size, {2, m.seq_len}, torch::kLong));
  return out;
}

double max_difference(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    REQUIRE(a[i].sizes() == b[i].sizes());
    worst = std::max(worst, (a[i].to(torch::kDouble) - b[i].to(torch::kDouble)).abs().max().item<double>());
  }
  return worst;
}

std::vector<torch::Tensor> gradients(const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> out;
  for (const torch::Tensor& p : params) out.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
  return out;
}

std::vector<torch::Tensor> values(const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> out;
  for (const torch::Tensor& p : params) out.push_back(p.detach().clone());
  return out;
}

}  // namespace

// The whole model streamed through windows of 1, 2 and 3 layers: the same losses, gradients and
// updated weights as the resident stage with checkpointing (float32, within 1e-6), over two steps;
// each layer's weights load once forward and once backward per step, whatever M.
TEST_CASE("a streamed stage equals the resident one") {
  const ModelConfig m = tiny_model();
  const int64_t head = head_layer(m);
  for (int window : {1, 2, 3}) {
    CAPTURE(window);
    StageOptions resident_options;
    resident_options.checkpointing = true;
    Stage resident(m, kEmbedLayer, head, kSeed, resident_options);
    StreamedStageOptions options;
    options.window_layers = window;
    StreamedStage streamed(m, kEmbedLayer, head, kSeed, options, stand_in());
    REQUIRE(max_difference(values(resident.parameters()), values(streamed.parameters())) == 0.0);
    for (int step = 0; step < 2; ++step) {
      const std::vector<torch::Tensor> inputs = token_batches(m, 100 + step);
      const std::vector<torch::Tensor> targets = token_batches(m, 200 + step);
      resident.zero_grad();
      streamed.zero_grad();
      std::vector<double> expected;
      for (int k = 0; k < kMicroBatches; ++k) expected.push_back(resident.forward_loss(k, inputs[k], targets[k], kMicroBatches));
      for (int k = 0; k < kMicroBatches; ++k) resident.backward(k, torch::Tensor());
      const std::vector<double> losses = streamed.forward_loss(inputs, targets, kMicroBatches);
      streamed.backward({});
      for (int k = 0; k < kMicroBatches; ++k) CHECK(losses[k] == doctest::Approx(expected[k]).epsilon(1e-6));
      CHECK(max_difference(gradients(resident.parameters()), gradients(streamed.parameters())) < 1e-6);
      CHECK(streamed.grad_squared_norm() == doctest::Approx(resident.grad_squared_norm()).epsilon(1e-6));
      resident.step(1e-2, 0.5);
      streamed.step(1e-2, 0.5);
      CHECK(max_difference(values(resident.parameters()), values(streamed.parameters())) < 1e-6);
    }
    const auto& stand_in_stream = dynamic_cast<const StandInWeightStream&>(streamed.stream());
    CHECK_MESSAGE(stand_in_stream.loads() == 2 * 2 * (head + 1), "each layer twice per step, over two steps");
  }
}

// A middle stage (blocks only) passes activations and gradients like the resident one.
TEST_CASE("a streamed middle stage returns the resident stage's input gradients") {
  const ModelConfig m = tiny_model();
  StageOptions resident_options;
  resident_options.checkpointing = true;
  Stage resident(m, 1, 3, kSeed, resident_options);
  StreamedStage streamed(m, 1, 3, kSeed, StreamedStageOptions{}, stand_in());
  torch::manual_seed(3);
  std::vector<torch::Tensor> inputs, grads;
  for (int k = 0; k < kMicroBatches; ++k) {
    inputs.push_back(torch::randn({2, m.seq_len, m.hidden_dim}));
    grads.push_back(torch::randn({2, m.seq_len, m.hidden_dim}));
  }
  std::vector<torch::Tensor> expected_out, expected_grads;
  for (int k = 0; k < kMicroBatches; ++k) expected_out.push_back(resident.forward(k, inputs[k]));
  for (int k = 0; k < kMicroBatches; ++k) expected_grads.push_back(resident.backward(k, grads[k]));
  CHECK(max_difference(expected_out, streamed.forward(inputs)) < 1e-6);
  CHECK(max_difference(expected_grads, streamed.backward(grads)) < 1e-6);
  CHECK(max_difference(gradients(resident.parameters()), gradients(streamed.parameters())) < 1e-6);
}

// The window's rule: a slot is refilled only once the compute holding it released it. Refilling
// it earlier is refused (this is what fails if the stage ever reuses a slot early); after the
// release the same slot takes the next layer, whose weights then read back exactly.
TEST_CASE("a window slot is not refilled while a layer holds it") {
  StandInWeightStream stream(1, 4, torch::kFloat32);
  const torch::Tensor first = torch::tensor({1.0f, 2.0f, 3.0f, 4.0f});
  const torch::Tensor second = torch::tensor({5.0f, 6.0f, 7.0f, 8.0f});
  stream.load(0, 1, {stream.slot(0)}, {first});
  CHECK_THROWS_WITH_AS(stream.load(0, 2, {stream.slot(0)}, {second}), "window slot 0 refilled with layer 2 while layer 1 still holds it",
                       std::logic_error);
  stream.wait_loaded(0);
  CHECK(torch::equal(stream.slot(0), first));
  CHECK_THROWS_AS(stream.load(0, 2, {stream.slot(0)}, {second}), std::logic_error);
  stream.release(0);
  stream.load(0, 2, {stream.slot(0)}, {second});
  stream.wait_loaded(0);
  CHECK(torch::equal(stream.slot(0), second));
  CHECK_THROWS_AS(StandInWeightStream(0, 4, torch::kFloat32), std::invalid_argument);
}

// The window the stand-in allocates is what the memory estimate counts for a streamed stage's
// weights on its device: window_layers times the largest layer, in the compute dtype.
TEST_CASE("the stand-in's window is the estimate's") {
  const ModelConfig m = tiny_model();
  StreamedStageOptions options;
  options.window_layers = 3;
  StreamedStage streamed(m, 1, head_layer(m), kSeed, options, stand_in());
  const RangeCosts range = LayerPrefix(describe_model(m)).range(1, head_layer(m));
  CHECK(streamed.stream().window_bytes() == 3 * range.max_layer_params * 4);
}

// Layerwise update: without clipping, stepping each layer as its gradient arrives is the same
// update as stepping all after the backward. With clipping, each layer is clipped to its share:
// the factor is exactly layer_clip_scale's.
TEST_CASE("layerwise update") {
  CHECK(layer_clip_scale(2.0, 0.0, 10, 40) == 1.0);
  CHECK(layer_clip_scale(0.25, 1.0, 10, 40) == 1.0);          // under its share, sqrt(10 / 40) = 0.5
  CHECK(layer_clip_scale(2.0, 1.0, 10, 40) == doctest::Approx(0.25));
  const ModelConfig m = tiny_model();
  const int64_t head = head_layer(m);
  StreamedStage all(m, kEmbedLayer, head, kSeed, StreamedStageOptions{}, stand_in());
  StreamedStage layerwise(m, kEmbedLayer, head, kSeed, StreamedStageOptions{}, stand_in());
  const std::vector<torch::Tensor> inputs = token_batches(m, 11), targets = token_batches(m, 12);
  all.forward_loss(inputs, targets, kMicroBatches);
  all.backward({});
  all.step(1e-2, 1.0);
  layerwise.set_layerwise_step(LayerwiseStep{1e-2, 0.0, 1.0, 0});
  layerwise.forward_loss(inputs, targets, kMicroBatches);
  layerwise.backward({});
  CHECK(max_difference(values(all.parameters()), values(layerwise.parameters())) < 1e-6);
  // Every layer's gradient was consumed by its step; their norm is still the step's.
  CHECK(layerwise.grad_squared_norm() == doctest::Approx(all.grad_squared_norm()).epsilon(1e-6));
  CHECK(layerwise.non_finite_layers() == 0);
}
