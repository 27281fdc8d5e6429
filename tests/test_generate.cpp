// runtime/tools/generate and stages/model's CachedDecoder: cached logits equal the training forward
// pass's, greedy decoding is its argmax position by position, cached and uncached decoding give the
// same tokens (also past seq_len), sampling keeps to top-k and top-p, and `pipetrain generate` runs
// on a trained run and refuses bad options.
#include <doctest/doctest.h>
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include <set>

#include "memory/errors.h"
#include "runtime/tools/decode.h"
#include "stages/model.h"
#include "test_util.h"

using namespace pipetrain;

namespace {

ModelConfig small_model(int64_t seq_len) {
  ModelConfig m;
  m.vocab_size = 64;
  m.hidden_dim = 32;
  m.num_layers = 2;
  m.num_heads = 4;
  m.intermediate_size = 64;
  m.seq_len = seq_len;
  return m;
}

std::vector<int64_t> prompt_of(int n) {
  std::vector<int64_t> p;
  for (int i = 0; i < n; ++i) p.push_back((i * 11 + 3) % 64);
  return p;
}

torch::Tensor row(const std::vector<int64_t>& tokens) { return torch::tensor(tokens, torch::kLong).view({1, -1}); }

}  // namespace

// Prefill a prompt, then one position at a time: each step's logits equal the whole prefix's
// forward pass at that position (float32 summation order differs: 1e-5).
TEST_CASE("the KV-cached decoder computes the training forward pass's logits") {
  torch::NoGradGuard no_grad;
  LayerRange model = make_gpt_model(small_model(24), 7);
  CachedDecoder decoder(model);
  std::vector<int64_t> tokens = prompt_of(9);
  const torch::Tensor prefill = decoder.forward(row(tokens));
  CHECK(torch::allclose(prefill, model->forward(row(tokens)), 1e-5, 1e-5));
  for (int i = 0; i < 10; ++i) {
    tokens.push_back((i * 5 + 1) % 64);
    const torch::Tensor step = decoder.forward(row({tokens.back()}));
    CHECK(step.size(1) == 1);
    const torch::Tensor full = model->forward(row(tokens)).select(1, -1);
    CHECK(torch::allclose(step.select(1, 0), full, 1e-5, 1e-5));
  }
  CHECK(decoder.length() == 19);
  CHECK_THROWS_AS(decoder.forward(row(prompt_of(6))), InputError);  // 25 > seq_len 24
  decoder.reset();
  CHECK(decoder.length() == 0);
}

TEST_CASE("greedy decoding is the argmax of the training forward pass, position by position") {
  LayerRange model = make_gpt_model(small_model(32), 11);
  const std::vector<int64_t> prompt = prompt_of(5);
  GenerateOptions greedy;
  greedy.temperature = 0;
  greedy.max_tokens = 20;
  std::vector<int64_t> streamed;
  const std::vector<int64_t> out = generate_tokens(model, prompt, greedy, true, [&](int64_t t) { streamed.push_back(t); });
  CHECK(out.size() == 20);
  CHECK(streamed == out);
  std::vector<int64_t> all = prompt;
  all.insert(all.end(), out.begin(), out.end() - 1);
  torch::NoGradGuard no_grad;
  const torch::Tensor argmax = model->forward(row(all)).argmax(-1)[0];
  for (size_t i = 0; i < out.size(); ++i) {
    CHECK(argmax[static_cast<int64_t>(prompt.size() - 1 + i)].item<int64_t>() == out[i]);
  }
}

// Sampling too, and past seq_len, where both restart from the newest half of the context.
TEST_CASE("cached and uncached decoding give the same tokens") {
  LayerRange model = make_gpt_model(small_model(16), 3);
  for (const double temperature : {0.0, 1.0}) {
    GenerateOptions options;
    options.temperature = temperature;
    options.top_k = 40;
    options.top_p = 0.95;
    options.max_tokens = 45;  // the 16 positions fill several times
    options.seed = 99;
    const auto none = [](int64_t) {};
    const auto cached = generate_tokens(model, prompt_of(6), options, true, none);
    const auto uncached = generate_tokens(model, prompt_of(6), options, false, none);
    CHECK(cached.size() == 45);
    CHECK(cached == uncached);
  }
}

TEST_CASE("sampling keeps to temperature 0, top-k and top-p") {
  const torch::Tensor logits = torch::tensor({0.1, 2.0, 1.9, -1.0, 0.5, 1.0});
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(5);
  GenerateOptions o;
  o.temperature = 0;
  CHECK(sample_token(logits, o, gen) == 1);
  o.temperature = 1;
  o.top_k = 2;
  std::set<int64_t> seen;
  for (int i = 0; i < 300; ++i) seen.insert(sample_token(logits, o, gen));
  CHECK(seen == std::set<int64_t>{1, 2});
  // top_p: probabilities of 1 and 2 are about 0.33 and 0.30; p = 0.5 keeps exactly those two.
  o.top_k = 0;
  o.top_p = 0.5;
  seen.clear();
  for (int i = 0; i < 300; ++i) seen.insert(sample_token(logits, o, gen));
  CHECK(seen == std::set<int64_t>{1, 2});
  o.top_p = 0.01;  // the most likely token alone
  for (int i = 0; i < 20; ++i) CHECK(sample_token(logits, o, gen) == 1);
  // A high temperature reaches every token.
  o.top_p = 1;
  o.temperature = 50;
  seen.clear();
  for (int i = 0; i < 600; ++i) seen.insert(sample_token(logits, o, gen));
  CHECK(seen.size() == 6);
}

TEST_CASE("generate options out of range are refused by name") {
  GenerateOptions o;
  o.temperature = -1;
  CHECK_THROWS_WITH_AS(check_generate_options(o), doctest::Contains("--temperature"), InputError);
  o = GenerateOptions{};
  o.top_p = 0;
  CHECK_THROWS_WITH_AS(check_generate_options(o), doctest::Contains("--top-p"), InputError);
  o = GenerateOptions{};
  o.top_k = -3;
  CHECK_THROWS_WITH_AS(check_generate_options(o), doctest::Contains("--top-k is -3"), InputError);
  o = GenerateOptions{};
  o.max_tokens = -1;
  CHECK_THROWS_WITH_AS(check_generate_options(o), doctest::Contains("--max-tokens"), InputError);
}

TEST_CASE("pipetrain generate streams text from a trained run and refuses bad input with exit 2") {
  testing::ScratchDir dir;
  const std::string data = dir.file("text.txt", testing::sample_text(300));
  const std::string config = dir.file("tiny.yaml", testing::tiny_config_yaml(data, 2, 32));
  const std::string bin = PIPETRAIN_BINARY;
  const auto trained = testing::run_command(bin + " train --config " + config + " --steps 3 --out " + dir.path() + "/run");
  REQUIRE_MESSAGE(trained.exit_code == 0, trained.output);

  // stdout alone (run_command adds stderr to it).
  const auto stdout_of = [](const std::string& command) { return testing::run_command("(" + command + " 2>/dev/null)"); };
  const auto greedy = stdout_of(bin + " generate " + dir.path() + "/run --prompt 'the pipe' --max-tokens 40 "
                                           "--temperature 0 --device cpu");
  CHECK_MESSAGE(greedy.exit_code == 0, greedy.output);
  CHECK(greedy.output.rfind("the pipe", 0) == 0);
  CHECK(greedy.output.size() == 8 + 40 + 1);  // prompt, 40 byte tokens, a newline
  const auto uncached = stdout_of(bin + " generate " + dir.path() + "/run --prompt 'the pipe' --max-tokens 40 "
                                             "--temperature 0 --device cpu --no-cache");
  CHECK(uncached.output == greedy.output);
  const auto from_stdin = stdout_of("printf 'the pipe' | " + bin + " generate " + dir.path() +
                                    "/run --max-tokens 40 --temperature 0 --device cpu");
  CHECK(from_stdin.output == greedy.output);
  const auto stats = testing::run_command(bin + " generate " + dir.path() + "/run -p x --max-tokens 5");
  CHECK(stats.output.find("step 3") != std::string::npos);
  CHECK(stats.output.find("tokens/s") != std::string::npos);

  CHECK(testing::run_command(bin + " generate " + dir.path() + "/run -p x --top-p 2").exit_code == 2);
  CHECK(testing::run_command(bin + " generate " + dir.path() + "/nowhere -p x").exit_code == 2);
  CHECK(testing::run_command(bin + " generate " + dir.path() + "/run -p x --device cuda:3").exit_code == 2);
  const auto empty = testing::run_command(bin + " generate " + dir.path() + "/run < /dev/null");
  CHECK(empty.exit_code == 2);
  CHECK(empty.output.find("prompt is empty") != std::string::npos);
}
