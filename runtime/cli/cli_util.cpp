#include "runtime/cli/cli_util.h"

#include <cstdio>
#include <sstream>

#include "memory/errors.h"

namespace pipetrain::cli {

std::optional<cxxopts::ParseResult> parse_command(cxxopts::Options& options, int argc, char** argv,
                                                  const std::string& command) {
  cxxopts::ParseResult args = options.parse(argc, argv);
  if (args.count("help")) {
    std::printf("%s\n", options.help().c_str());
    return std::nullopt;
  }
  if (!args.unmatched().empty()) {
    throw InputError("unexpected argument '" + args.unmatched().front() + "' (try `pipetrain " + command + " --help`)");
  }
  return args;
}

RunConfig config_from_args(const cxxopts::ParseResult& args, const std::vector<std::string>& before,
                           const std::vector<std::string>& after) {
  std::vector<std::string> overrides = before;
  if (args.count("set")) {
    for (const std::string& o : args["set"].as<std::vector<std::string>>()) overrides.push_back(o);
  }
  overrides.insert(overrides.end(), after.begin(), after.end());
  const std::optional<std::string> path =
      args.count("config") ? std::optional<std::string>(args["config"].as<std::string>()) : std::nullopt;
  return load_run_config(path, overrides);
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> items;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (!item.empty()) items.push_back(item);
  }
  return items;
}

}  // namespace pipetrain::cli
