#include <cxxopts.hpp>

#include <cstdio>
#include <sstream>

#include "memory/errors.h"
#include "runtime/io/atomic_file.h"
#include "runtime/cli/cli_util.h"
#include "runtime/cli/commands.h"
#include "runtime/config/run_config.h"
#include "runtime/config/hardware_file.h"
#include "runtime/tools/calibration.h"
#include "runtime/tools/profile.h"
#include "scheduler/cost_model.h"

namespace pipetrain::cli {

int profile_command(int argc, char** argv) {
  cxxopts::Options options("pipetrain profile",
                           "Measures every layer's forward, backward and optimizer step on this machine (the CPU with "
                           "each core count a stage may get), and the CPU's GEMM rate, for a config's model and "
                           "micro-batch size. Writes a hardware file that `plan --hardware FILE` and `train --auto "
                           "--hardware FILE` use instead of FLOP rates.");
  options.add_options()
      ("c,config", "YAML config whose model and train.micro_batch_size are profiled (default: the default config)",
       cxxopts::value<std::string>())
      ("set", "override one config key, e.g. --set train.micro_batch_size=4 (repeatable)",
       cxxopts::value<std::vector<std::string>>())
      ("o,out", "the profile to write", cxxopts::value<std::string>()->default_value("profile.yaml"))
      ("repeats", "measured repetitions per layer per round (the median is kept); rounds repeat until two agree "
                  "within 3% (at most 3)", cxxopts::value<int>()->default_value("5"))
      ("cores", "core counts to measure, e.g. 1,2 (default: 1 to all usable cores)", cxxopts::value<std::string>())
      ("h,help", "show this help");
  const auto parsed = parse_command(options, argc, argv, "profile");
  if (!parsed) return 0;
  const cxxopts::ParseResult& args = *parsed;
  const RunConfig run = config_from_args(args, {"stages=none"});  // a profile is per layer: no stage map
  ProfileOptions profile;
  profile.repeats = args["repeats"].as<int>();
  if (profile.repeats < 1 || profile.repeats > 1000) {
    throw InputError("--repeats must be between 1 and 1000, got " + std::to_string(profile.repeats));
  }
  if (args.count("cores")) {
    for (const std::string& item : split_list(args["cores"].as<std::string>())) {
      try {
        profile.core_counts.push_back(std::stoi(item));
      } catch (const std::exception&) {
        throw InputError("--cores takes core counts like 1,2; got '" + item + "'");
      }
    }
  }
  profile.progress = [](const std::string& line) {
    std::fprintf(stderr, "  %s\n", line.c_str());
    std::fflush(stderr);
  };
  const std::string out = args["out"].as<std::string>();
  std::printf("profiling %s for micro-batches of %lld (%s)\n", run.source.c_str(),
              static_cast<long long>(run.train.micro_batch_size),
              profile_key(with_dtype(run.model, run.precision.cpu), run.train.micro_batch_size).c_str());
  std::fflush(stdout);
  const HardwareSpec hw =
      profile_this_machine(with_dtype(run.model, run.precision.cpu), run.train.micro_batch_size, run.train.optimizer, profile);
  write_file_atomically(out, "# pipetrain profile of this machine: per-layer times measured for model " +
                                 hw.measured.model_key + "\n" + hardware_to_yaml(hw));
  const DeviceSpec& cpu = hw.cpu();
  std::printf("GEMM: %.1f GFLOP/s on %d cores, %.1f on one\n", cpu.flops_per_s / 1e9, cpu.cores,
              cpu.single_core_flops_per_s / 1e9);
  for (const LayerTimes& e : hw.measured.entries) {
    double f = 0.0, b = 0.0, o = 0.0;
    for (size_t i = 0; i < e.forward_seconds.size(); ++i) {
      f += e.forward_seconds[i];
      b += e.backward_seconds[i];
      o += e.optimizer_seconds[i];
    }
    std::printf("whole model on cpu with %d core%s: forward %.2f ms, backward %.2f ms, optimizer %.2f ms per micro-batch; "
                "%d round%s, %.1f%% apart%s\n",
                e.cores, e.cores == 1 ? "" : "s", f * 1e3, b * 1e3, o * 1e3, e.rounds, e.rounds == 1 ? "" : "s",
                100.0 * e.spread,
                e.spread > profile.stable_within ? " (more than 3% apart: a busy or noisy machine; the times are the rounds' medians)"
                                                 : "");
  }
  const CpuCalibration& calibration = hw.measured.calibration;
  std::printf("calibration: a training block (forward and backward, fixed shape) %.2f ms on all cores; alone on one core: "
              "%s (%.0f%% apart)\n",
              calibration.all_cores_seconds * 1e3, core_times(calibration).c_str(), 100.0 * calibration.core_spread());
  if (calibration.unsteadiness > kUnsteadyFraction) std::printf("  %s\n", unsteadiness_message(calibration).c_str());
  if (calibration.core_spread() > kCoresDifferFraction) {
    std::printf("  this machine's cores do not run at one speed: a one-core stage's time depends on which core it gets; "
                "the one-core times above average them (plan, bench and train check again before they use this file)\n");
  }
  std::printf("GPUs: not profiled (%s)\n", hw.first_gpu() ? "the CUDA stage is the next issue" : "none here");
  std::printf("wrote %s; use it with `pipetrain plan --auto --hardware %s` or `pipetrain train --auto --hardware %s`\n",
              out.c_str(), out.c_str(), out.c_str());
  return 0;
}

}  // namespace pipetrain::cli
