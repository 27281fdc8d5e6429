#include <cxxopts.hpp>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "memory/errors.h"
#include "runtime/backends/registry.h"
#include "runtime/cli/cli_util.h"
#include "runtime/cli/commands.h"
#include "runtime/data/tokenizer.h"
#include "runtime/io/checkpoint.h"
#include "runtime/tools/generate.h"

namespace pipetrain::cli {

int generate_command(int argc, char** argv) {
  cxxopts::Options options("pipetrain generate",
                           "Writes text from a trained model: the newest checkpoint of a run directory, or a checkpoint "
                           "directory. Tokens stream to stdout as they are chosen (a KV cache makes each cost one "
                           "position); the prompt is --prompt, else stdin. Timing goes to stderr.");
  options.add_options()
      ("run", "run directory or checkpoint directory", cxxopts::value<std::string>())
      ("p,prompt", "the text to continue (default: read stdin to its end)", cxxopts::value<std::string>())
      ("max-tokens", "tokens to generate", cxxopts::value<int64_t>()->default_value("200"))
      ("temperature", "divides the logits; 0 is greedy", cxxopts::value<double>()->default_value("0.8"))
      ("top-k", "sample from the k most likely tokens only; 0: all", cxxopts::value<int64_t>()->default_value("0"))
      ("top-p", "sample from the fewest tokens whose probability reaches p; 1: all", cxxopts::value<double>()->default_value("1"))
      ("seed", "the sampler's seed", cxxopts::value<uint64_t>()->default_value("1234"))
      ("device", "cpu, cuda:N, or auto (cuda:0 when this build and machine have a GPU)",
       cxxopts::value<std::string>()->default_value("auto"))
      ("no-cache", "re-read the whole context for every token (slower; the same tokens)")
      ("h,help", "show this help");
  options.parse_positional({"run"});
  options.positional_help("RUN");
  const auto parsed = parse_command(options, argc, argv, "generate");
  if (!parsed) return 0;
  const cxxopts::ParseResult& args = *parsed;
  if (!args.count("run")) throw InputError("name a run directory or checkpoint: pipetrain generate RUN [--prompt TEXT]");
  GenerateOptions generate;
  generate.max_tokens = args["max-tokens"].as<int64_t>();
  generate.temperature = args["temperature"].as<double>();
  generate.top_k = args["top-k"].as<int64_t>();
  generate.top_p = args["top-p"].as<double>();
  generate.seed = args["seed"].as<uint64_t>();
  check_generate_options(generate);
  const std::string device_name = args["device"].as<std::string>();
  const DeviceId device =
      device_name == "auto" ? (cuda_device_count() > 0 ? DeviceId::cuda(0) : DeviceId::cpu()) : parse_device(device_name);
  if (!device_available(device)) throw InputError("--device " + device_name + " is not available: " + torch_build_description());

  const CheckpointInfo checkpoint = find_checkpoint(args["run"].as<std::string>());
  std::string prompt;
  if (args.count("prompt")) {
    prompt = args["prompt"].as<std::string>();
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
      generate_tokens(loaded.model, tokens, generate, /*cached=*/args.count("no-cache") == 0, [&](int64_t token) {
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

}  // namespace pipetrain::cli
