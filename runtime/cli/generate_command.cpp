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
  // Byte-level tokens: a token is a byte's value.
  std::vector<int64_t> tokens;
  for (unsigned char c : prompt) {
    if (c >= loaded.run.model.vocab_size) {
      throw InputError("the prompt holds byte " + std::to_string(c) + ", outside this model's vocabulary of " +
                       std::to_string(loaded.run.model.vocab_size));
    }
    tokens.push_back(c);
  }
  std::fprintf(stderr, "%s (step %lld, %s), on %s\n", checkpoint.path.c_str(), static_cast<long long>(loaded.step),
               architecture_key(loaded.run.model).c_str(), device.name().c_str());
  std::fwrite(prompt.data(), 1, prompt.size(), stdout);
  std::fflush(stdout);
  const auto start = std::chrono::steady_clock::now();
  const std::vector<int64_t> out =
      generate_tokens(loaded.model, tokens, generate, /*cached=*/args.count("no-cache") == 0, [](int64_t token) {
        std::fputc(static_cast<int>(token), stdout);
        std::fflush(stdout);
      });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(stdout, "\n");
  std::fprintf(stderr, "%zu tokens in %.2f s, %.1f tokens/s (the prompt's %zu positions read first)\n", out.size(), seconds,
               seconds > 0 ? static_cast<double>(out.size()) / seconds : 0.0, tokens.size());
  return 0;
}

}  // namespace pipetrain::cli
