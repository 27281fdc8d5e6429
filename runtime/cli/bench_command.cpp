#include <cxxopts.hpp>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "memory/errors.h"
#include "runtime/backends/cpu/cpu_alloc_counter.h"
#include "runtime/backends/registry.h"
#include "runtime/cli/cli_util.h"
#include "runtime/cli/commands.h"
#include "runtime/config/hardware_file.h"
#include "runtime/config/run_config.h"
#include "runtime/tools/bench_session.h"

namespace pipetrain::cli {
namespace {

cxxopts::Options bench_options() {
  cxxopts::Options options("pipetrain bench",
                           "Runs real training steps for a set of splits and reports, per split, measured tokens/s "
                           "against the planner's prediction, the bubble, and memory; with the reference trainer and the "
                           "naive (unpipelined) run of the best split as baselines. Table on screen; CSV, JSON and a "
                           "plot (gnuplot) in --out.");
  options.add_options()
      ("c,config", "YAML config (model, train, hardware); default: the default config", cxxopts::value<std::string>())
      ("set", "override one config key (repeatable)", cxxopts::value<std::vector<std::string>>())
      ("vram-cap-gib", kVramCapHelp, cxxopts::value<double>())
      ("rescale-profile", kRescaleProfileHelp)
      ("hardware", "hardware preset or file, e.g. a `pipetrain profile` output (default: the config's)",
       cxxopts::value<std::string>())
      ("splits", "all (every boundary choice, capped by --max-splits), top:K (the planner's K best), or stage map "
                 "files separated by commas", cxxopts::value<std::string>()->default_value("top:5"))
      ("max-splits", "cap for --splits all (an evenly spaced subset beyond it)", cxxopts::value<int>()->default_value("40"))
      ("gpu-stages-on-cpu", "with stage map files: run stages placed on cuda:N on the CPU when this build or machine has no "
                            "such GPU (a stage streaming its weights on standin:N, the GPU's stand-in; warns)")
      ("schedules", "schedules to time, e.g. gpipe,1f1b (default: the config's)", cxxopts::value<std::string>())
      ("micro-batches", "micro-batch counts to time, e.g. 4,8 (default: the config's)", cxxopts::value<std::string>())
      ("steps", "measured steps per case", cxxopts::value<int>()->default_value("3"))
      ("warmup", "unmeasured steps per case first", cxxopts::value<int>()->default_value("1"))
      ("o,out", "directory for bench.csv, bench.json, bench.gp and bench.png", cxxopts::value<std::string>()->default_value("bench"))
      ("h,help", "show this help");
  return options;
}

// --splits: all, top:K, or stage map files (validated and placed on devices this build has).
void read_splits(const std::string& splits, const cxxopts::ParseResult& args, BenchRequest& request) {
  if (splits == "all") {
    request.splits = SplitSelection::kAll;
    request.max_splits = static_cast<size_t>(std::max(0, args["max-splits"].as<int>()));
  } else if (splits.rfind("top:", 0) == 0) {
    request.splits = SplitSelection::kTop;
    request.top = std::atoi(splits.c_str() + 4);
    if (request.top < 1) throw InputError("--splits top:K needs K >= 1, got '" + splits + "'");
  } else {
    request.splits = SplitSelection::kMaps;
    for (const std::string& file : split_list(splits)) {
      StageMap map = load_stage_map_file(file, request.run.model);
      validate_stage_map(map, request.run.model, request.hardware);
      std::vector<std::string> warnings;
      request.maps.push_back(place_stages(map, args.count("gpu-stages-on-cpu") > 0, &warnings));
      for (const std::string& w : warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
    }
  }
}

}  // namespace

int bench_command(int argc, char** argv) {
  CpuAllocCounter::install();  // before any tensor: the memory columns count every allocation
  cxxopts::Options options = bench_options();
  const auto parsed = parse_command(options, argc, argv, "bench");
  if (!parsed) return 0;
  const cxxopts::ParseResult& args = *parsed;
  BenchRequest request;
  request.run = config_from_args(args, {"stages=none"});  // the splits come from --splits
  request.hardware = hardware_from_args(args, request.run.hardware);
  if (args.count("gpu-stages-on-cpu")) request.hardware = request.hardware.with_stand_ins();
  request.steps = args["steps"].as<int>();
  request.warmup = args["warmup"].as<int>();
  if (request.steps < 1 || request.warmup < 0) {
    throw InputError("--steps must be at least 1 and --warmup at least 0; got --steps " + std::to_string(request.steps) +
                     " --warmup " + std::to_string(request.warmup));
  }
  request.schedules = {request.run.train.schedule};
  if (args.count("schedules")) {
    request.schedules.clear();
    for (const std::string& s : split_list(args["schedules"].as<std::string>())) request.schedules.push_back(ScheduleKind::named(s));
    if (request.schedules.empty()) throw InputError("--schedules names no schedule");
  }
  request.micro_batch_counts = {static_cast<int>(request.run.train.micro_batches)};
  if (args.count("micro-batches")) {
    request.micro_batch_counts.clear();
    for (const std::string& m : split_list(args["micro-batches"].as<std::string>())) {
      const int v = std::atoi(m.c_str());
      if (v < 1) throw InputError("--micro-batches takes counts like 4,8; got '" + m + "'");
      request.micro_batch_counts.push_back(v);
    }
    if (request.micro_batch_counts.empty()) throw InputError("--micro-batches names no count");
  }
  read_splits(args["splits"].as<std::string>(), args, request);
  request.out_dir = args["out"].as<std::string>();
  return run_bench_session(request);
}

}  // namespace pipetrain::cli
