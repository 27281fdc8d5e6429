#include "runtime/cli/cli_util.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "memory/units.h"
#include "memory/errors.h"
#include "memory/machine_probe.h"
#include "runtime/tools/calibration.h"
#include "runtime/tools/hardware_probe.h"

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

std::optional<int64_t> vram_cap_bytes(const cxxopts::ParseResult& args) {
  if (!args.count("vram-cap-gib")) return std::nullopt;
  const double gib = args["vram-cap-gib"].as<double>();
  if (!(gib > 0.0) || gib > 1e6) {
    throw InputError("--vram-cap-gib must be a positive number of GiB (at most 1e6), got " + std::to_string(gib));
  }
  return static_cast<int64_t>(gib * 1024.0 * 1024.0 * 1024.0);
}

HardwareSpec with_vram_cap(HardwareSpec hardware, const cxxopts::ParseResult& args) {
  const std::optional<int64_t> requested = vram_cap_bytes(args);
  if (!requested) return hardware;
  const int64_t cap = *requested;
  bool any = false;
  for (DeviceSpec& d : hardware.devices) {
    if (!d.id.has_own_memory()) continue;
    d.memory_bytes = std::min(d.memory_bytes, cap);
    any = true;
  }
  if (!any) {
    throw InputError("--vram-cap-gib " + format_gib(cap) + " was given, but hardware '" + hardware.name +
                     "' has no GPU (devices: " + hardware.device_names() + ")");
  }
  hardware.source += ", VRAM capped at " + format_gib(cap);
  return hardware;
}

HardwareSpec hardware_from_args(const cxxopts::ParseResult& args, const std::string& configured) {
  HardwareSpec hardware =
      with_vram_cap(load_hardware(args.count("hardware") ? args["hardware"].as<std::string>() : configured), args);
  const bool rescale = args.count("rescale-profile") > 0;
  if (!is_measured_profile(hardware)) {
    if (rescale) {
      throw InputError("--rescale-profile rescales a measured hardware file (`pipetrain profile`); hardware '" +
                       hardware.name + "' holds no measured times");
    }
    return hardware;
  }
  const Calibration calibration = calibrate_cpu(hardware);
  if (calibration.cores_differ()) std::fprintf(stderr, "%s\n", cores_message(calibration).c_str());
  if (calibration.unsteady()) std::fprintf(stderr, "%s\n", unsteadiness_message(calibration.measured).c_str());
  if (rescale) {
    std::fprintf(stderr, "%s\n", calibration_message(calibration, hardware.name, true).c_str());
    HardwareSpec rescaled = with_cpu_slower_by(std::move(hardware), calibration.time_scale());
    rescaled.source += ", CPU times rescaled to this machine now";
    return rescaled;
  }
  if (calibration.stale()) std::fprintf(stderr, "%s\n", calibration_message(calibration, hardware.name, false).c_str());
  return hardware;
}

}  // namespace pipetrain::cli
