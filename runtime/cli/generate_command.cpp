#include <cxxopts.hpp>

#include <string>

#include "memory/errors.h"
#include "runtime/cli/cli_util.h"
#include "runtime/cli/commands.h"
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
  GenerateRequest request;
  request.source = args["run"].as<std::string>();
  if (args.count("prompt")) request.prompt = args["prompt"].as<std::string>();
  request.options = generate;
  request.device = args["device"].as<std::string>();
  request.cached = args.count("no-cache") == 0;
  return run_generate(request);
}

}  // namespace pipetrain::cli
