// What every command's option handling shares: --help, stray arguments, --config with --set, lists.
#pragma once

#include <cxxopts.hpp>

#include <optional>
#include <string>
#include <vector>

#include "memory/hardware.h"
#include "runtime/config/run_config.h"

namespace pipetrain::cli {

// Parses argv. With --help it prints the help and returns nothing (the command exits 0); a stray
// argument is an InputError that points at `pipetrain COMMAND --help`.
std::optional<cxxopts::ParseResult> parse_command(cxxopts::Options& options, int argc, char** argv,
                                                  const std::string& command);

// The config --config names (the default config without one), with the overrides `before`, then
// every --set, then `after` applied in that order.
RunConfig config_from_args(const cxxopts::ParseResult& args, const std::vector<std::string>& before = {},
                           const std::vector<std::string>& after = {});

// --vram-cap-gib: every GPU of `hardware` gets at most that much memory, so plans are made for the
// smaller card and the run's caching allocator is held to it (an H100 standing in for an 8 GiB
// card). Without the option the hardware is returned unchanged. A non-positive or non-finite value
// is an InputError naming it.
HardwareSpec with_vram_cap(HardwareSpec hardware, const cxxopts::ParseResult& args);
// --vram-cap-gib in bytes, checked as above; nothing without the option.
std::optional<int64_t> vram_cap_bytes(const cxxopts::ParseResult& args);
constexpr const char* kVramCapHelp =
    "hold every GPU to this many GiB: the plan's budget and the caching allocator's cap (a large GPU stands in for a smaller one)";

// The hardware a command plans for: --hardware, else the config's `hardware`; --vram-cap-gib applied.
// A measured hardware file (pipetrain profile) is first checked against this machine
// (runtime/tools/calibration.h): more than 10% apart, a line on stderr says so; with
// --rescale-profile its CPU times are rescaled to the machine as it is now. --rescale-profile with
// hardware that holds no measured times is an InputError.
HardwareSpec hardware_from_args(const cxxopts::ParseResult& args, const std::string& configured);
constexpr const char* kRescaleProfileHelp =
    "when --hardware is a profile and this machine's GEMM rate has changed since it was taken, scale the profile's CPU "
    "times by the change";

// "a,b,,c" -> {"a", "b", "c"}
std::vector<std::string> split_list(const std::string& text);

}  // namespace pipetrain::cli
