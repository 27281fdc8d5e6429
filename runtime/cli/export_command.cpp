#include <cxxopts.hpp>

#include <cstdio>
#include <string>

#include "memory/errors.h"
#include "runtime/cli/cli_util.h"
#include "runtime/cli/commands.h"
#include "runtime/io/weights_file.h"

namespace pipetrain::cli {

int export_command(int argc, char** argv) {
  cxxopts::Options options("pipetrain export",
                           "Writes a trained model's weights as a safetensors file (tensor names in the README, "
                           "\"Weights files\"), and config.json beside it describing the architecture: the newest "
                           "checkpoint of a run directory, or a checkpoint directory. `pipetrain train --init-from "
                           "FILE` starts a run from such a file.");
  options.add_options()
      ("run", "run directory or checkpoint directory", cxxopts::value<std::string>())
      ("o,out", "the safetensors file to write", cxxopts::value<std::string>())
      ("force", "replace the file and config.json when they exist")
      ("h,help", "show this help");
  options.parse_positional({"run"});
  options.positional_help("RUN");
  const auto parsed = parse_command(options, argc, argv, "export");
  if (!parsed) return 0;
  const cxxopts::ParseResult& args = *parsed;
  if (!args.count("run") || !args.count("out")) throw InputError("usage: pipetrain export RUN --out model.safetensors");
  const std::string out = args["out"].as<std::string>();
  const std::string what = export_run_weights(args["run"].as<std::string>(), out, args.count("force") > 0);
  std::printf("wrote %s (%s) and config.json beside it\n", out.c_str(), what.c_str());
  return 0;
}

}  // namespace pipetrain::cli
