// What every command's option handling shares: --help, stray arguments, --config with --set, lists.
#pragma once

#include <cxxopts.hpp>

#include <optional>
#include <string>
#include <vector>

#include "runtime/config.h"

namespace pipetrain::cli {

// Parses argv. With --help it prints the help and returns nothing (the command exits 0); a stray
// argument is an InputError that points at `pipetrain COMMAND --help`.
std::optional<cxxopts::ParseResult> parse_command(cxxopts::Options& options, int argc, char** argv,
                                                  const std::string& command);

// The config --config names (the default config without one), with the overrides `before`, then
// every --set, then `after` applied in that order.
RunConfig config_from_args(const cxxopts::ParseResult& args, const std::vector<std::string>& before = {},
                           const std::vector<std::string>& after = {});

// "a,b,,c" -> {"a", "b", "c"}
std::vector<std::string> split_list(const std::string& text);

}  // namespace pipetrain::cli
