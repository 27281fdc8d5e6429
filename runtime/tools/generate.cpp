#include "runtime/tools/decode.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/functional/activation.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <cmath>
#include <limits>
#include <map>

#include "memory/errors.h"
#include "runtime/backends/registry.h"
#include "runtime/data/tokenizer.h"

namespace pipetrain {

void check_generate_options(const GenerateOptions& options) {
  if (options.max_tokens < 0) throw InputError("--max-tokens is " + std::to_string(options.max_tokens) + "; it must be 0 or more");
  if (!std::isfinite(options.temperature) || options.temperature < 0) {
    throw InputError("--temperature is " + std::to_string(options.temperature) + "; it must be 0 (greedy) or more");
  }
  if (options.top_k < 0) throw InputError("--top-k is " + std::to_string(options.top_k) + "; it must be 0 (off) or more");
  if (!(options.top_p > 0 && options.top_p <= 1)) {
    throw InputError("--top-p is " + std::to_string(options.top_p) + "; it must be in (0, 1]");
  }
}

LoadedModel load_model(const CheckpointInfo& checkpoint, torch::Device device) {
  LoadedModel loaded;
  loaded.run = parse_run_config(checkpoint.config_yaml, "the config in checkpoint '" + checkpoint.path + "'");
  loaded.step = checkpoint.step;
  // Decoding computes in float32 whatever the run trained in: the checkpoint holds float32 masters.
  ModelConfig model = loaded.run.model;
  if (model.dtype != Dtype::kFloat64) model = with_dtype(model, Dtype::kFloat32);
  loaded.model = make_gpt_model(model, loaded.run.train.seed);
  torch::NoGradGuard no_grad;
  read_checkpoint_layers(checkpoint, [&](int64_t layer, const std::vector<std::pair<std::string, torch::Tensor>>& state) {
    if (layer < 0 || layer >= model.num_model_layers()) throw InputError("layer " + std::to_string(layer) + " is not in the model");
    auto params = loaded.model->layers()[static_cast<size_t>(layer)]->named_parameters(/*recurse=*/true);
    size_t set = 0;
    for (const auto& [key, tensor] : state) {
      if (key.rfind("param/", 0) != 0) continue;
      torch::Tensor* p = params.find(key.substr(6));
      if (p == nullptr) throw InputError(key + " is no parameter of layer " + std::to_string(layer));
      if (!p->sizes().equals(tensor.sizes())) {
        throw InputError(key + " has shape " + c10::str(tensor.sizes()) + ", the model's is " + c10::str(p->sizes()));
      }
      p->copy_(tensor);
      ++set;
    }
    if (set != params.size()) {
      throw InputError("holds " + std::to_string(set) + " of layer " + std::to_string(layer) + "'s " +
                       std::to_string(params.size()) + " parameters");
    }
  });
  loaded.model->to(device);
  loaded.model->eval();
  return loaded;
}

int64_t sample_token(const torch::Tensor& logits, const GenerateOptions& options, at::Generator& generator) {
  torch::Tensor scores = logits.detach().to(torch::kCPU, torch::kFloat64).reshape({-1});
  if (options.temperature == 0) return scores.argmax().item<int64_t>();
  scores = scores / options.temperature;
  const int64_t vocab = scores.size(0);
  if (options.top_k > 0 && options.top_k < vocab) {
    const double kth = std::get<0>(scores.topk(options.top_k)).min().item<double>();
    scores = scores.masked_fill(scores < kth, -std::numeric_limits<double>::infinity());
  }
  torch::Tensor probs = torch::softmax(scores, 0);
  if (options.top_p < 1) {
    auto [sorted, order] = probs.sort(/*dim=*/0, /*descending=*/true);
    // Keep a token while the tokens before it sum to less than top_p: the most likely one always.
    torch::Tensor before = sorted.cumsum(0) - sorted;
    torch::Tensor drop = torch::zeros_like(probs, torch::kBool).scatter(0, order, before >= options.top_p);
    probs = probs.masked_fill(drop, 0.0);
  }
  return torch::multinomial(probs, 1, /*replacement=*/false, generator).item<int64_t>();
}

std::vector<int64_t> generate_tokens(LayerRange model, const std::vector<int64_t>& prompt, const GenerateOptions& options,
                                     bool cached, const std::function<void(int64_t token)>& emit) {
  if (prompt.empty()) throw InputError("the prompt holds no tokens");
  torch::NoGradGuard no_grad;
  const torch::Device device = model->parameters().front().device();
  const auto as_tensor = [&](const std::vector<int64_t>& tokens, size_t from) {
    return torch::tensor(std::vector<int64_t>(tokens.begin() + static_cast<std::ptrdiff_t>(from), tokens.end()), torch::kLong)
        .view({1, -1})
        .to(device);
  };
  CachedDecoder decoder(model);
  const auto capacity = static_cast<size_t>(decoder.capacity());
  // The tokens the model conditions on: the prompt's newest `capacity` at first.
  std::vector<int64_t> context(prompt.end() - static_cast<std::ptrdiff_t>(std::min(prompt.size(), capacity)), prompt.end());
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  std::vector<int64_t> out;
  torch::Tensor logits = cached ? decoder.forward(as_tensor(context, 0)) : model->forward(as_tensor(context, 0));
  for (int64_t i = 0; i < options.max_tokens; ++i) {
    const int64_t token = sample_token(logits[0][-1], options, generator);
    out.push_back(token);
    emit(token);
    if (i + 1 == options.max_tokens) break;
    context.push_back(token);
    if (context.size() > capacity) {
      // Out of positions: the newest half becomes the context, read again from position 0.
      context.erase(context.begin(), context.end() - static_cast<std::ptrdiff_t>(std::max<size_t>(capacity / 2, 1)));
      decoder.reset();
      logits = cached ? decoder.forward(as_tensor(context, 0)) : model->forward(as_tensor(context, 0));
    } else {
      logits = cached ? decoder.forward(as_tensor(context, context.size() - 1)) : model->forward(as_tensor(context, 0));
    }
  }
  return out;
}

int run_generate(const GenerateRequest& request) {
  check_generate_options(request.options);
  const std::string device_name = request.device;
  const DeviceId device =
      device_name == "auto" ? (cuda_device_count() > 0 ? DeviceId::cuda(0) : DeviceId::cpu()) : parse_device(device_name);
  if (!device_available(device)) throw InputError("--device " + device_name + " is not available: " + torch_build_description());

  const CheckpointInfo checkpoint = find_checkpoint(request.source);
  std::string prompt;
  if (request.prompt) {
    prompt = *request.prompt;
  } else {
    if (::isatty(STDIN_FILENO)) std::fprintf(stderr, "reading the prompt from stdin (end it with Ctrl-D)\n");
    prompt.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  if (prompt.empty()) throw InputError("the prompt is empty: give --prompt TEXT or text on stdin");
  const LoadedModel loaded = load_model(checkpoint, torch_device(device));
  const Tokenizer tokenizer = Tokenizer::named(loaded.run.data.tokenizer);
  const std::vector<int32_t> encoded = tokenizer.encode(prompt);
  const std::vector<int64_t> tokens(encoded.begin(), encoded.end());
  std::fprintf(stderr, "%s (step %lld, %s, %s), on %s\n", checkpoint.path.c_str(), static_cast<long long>(loaded.step),
               architecture_key(loaded.run.model).c_str(), tokenizer.describe().c_str(), device.name().c_str());
  std::fwrite(prompt.data(), 1, prompt.size(), stdout);
  std::fflush(stdout);
  // Each token's text as soon as it is stable: the generated ids decoded whole, printed past what
  // is already out, holding back a trailing replacement character (a UTF-8 sequence whose bytes
  // are still arriving as byte pieces).
  std::vector<int64_t> generated;
  std::string printed;
  const auto print_stable = [&](bool last) {
    const std::string text = tokenizer.decode(generated);
    size_t stable = text.size();
    while (!last && stable >= 3 && text.compare(stable - 3, 3, "\xEF\xBF\xBD") == 0) stable -= 3;
    if (stable > printed.size() && text.compare(0, printed.size(), printed) == 0) {
      std::fwrite(text.data() + printed.size(), 1, stable - printed.size(), stdout);
      std::fflush(stdout);
      printed = text.substr(0, stable);
    }
  };
  const auto start = std::chrono::steady_clock::now();
  const std::vector<int64_t> out =
      generate_tokens(loaded.model, tokens, request.options, request.cached, [&](int64_t token) {
        generated.push_back(token);
        print_stable(false);
      });
  print_stable(true);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(stdout, "\n");
  std::fprintf(stderr, "%zu tokens in %.2f s, %.1f tokens/s (the prompt's %zu tokens read first)\n", out.size(), seconds,
               seconds > 0 ? static_cast<double>(out.size()) / seconds : 0.0, tokens.size());
  return 0;
}

}  // namespace pipetrain
