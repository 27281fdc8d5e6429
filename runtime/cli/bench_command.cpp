#include <sys/stat.h>

#include <cxxopts.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "memory/errors.h"
#include "memory/machine_probe.h"
#include "memory/model_desc.h"
#include "runtime/io/atomic_file.h"
#include "runtime/tools/bench.h"
#include "runtime/cli/cli_util.h"
#include "runtime/cli/commands.h"
#include "runtime/config/run_config.h"
#include "runtime/backends/cpu/cpu_alloc_counter.h"
#include "runtime/backends/registry.h"
#include "runtime/config/hardware_file.h"
#include "runtime/tools/hardware_probe.h"
#include "runtime/tools/plan_report.h"
#include "scheduler/cost_model.h"
#include "scheduler/planner.h"

namespace pipetrain::cli {
namespace {

std::string mib(int64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.0f", static_cast<double>(bytes) / 1048576.0);
  return text;
}

}  // namespace

int bench_command(int argc, char** argv) {
  CpuAllocCounter::install();  // before any tensor: the memory columns count every allocation
  cxxopts::Options options("pipetrain bench",
                           "Runs real training steps for a set of splits and reports, per split, measured tokens/s "
                           "against the planner's prediction, the bubble, and memory; with the reference trainer and the "
                           "naive (unpipelined) run of the best split as baselines. Table on screen; CSV, JSON and a "
                           "plot (gnuplot) in --out.");
  options.add_options()
      ("c,config", "YAML config (model, train, hardware); default: the default config", cxxopts::value<std::string>())
      ("set", "override one config key (repeatable)", cxxopts::value<std::vector<std::string>>())
      ("vram-cap-gib", kVramCapHelp, cxxopts::value<double>())
      ("hardware", "hardware preset or file, e.g. a `pipetrain profile` output (default: the config's)",
       cxxopts::value<std::string>())
      ("splits", "all (every boundary choice, capped by --max-splits), top:K (the planner's K best), or stage map "
                 "files separated by commas", cxxopts::value<std::string>()->default_value("top:5"))
      ("max-splits", "cap for --splits all (an evenly spaced subset beyond it)", cxxopts::value<int>()->default_value("40"))
      ("schedules", "schedules to time, e.g. gpipe,1f1b (default: the config's)", cxxopts::value<std::string>())
      ("micro-batches", "micro-batch counts to time, e.g. 4,8 (default: the config's)", cxxopts::value<std::string>())
      ("steps", "measured steps per case", cxxopts::value<int>()->default_value("3"))
      ("warmup", "unmeasured steps per case first", cxxopts::value<int>()->default_value("1"))
      ("o,out", "directory for bench.csv, bench.json, bench.gp and bench.png", cxxopts::value<std::string>()->default_value("bench"))
      ("h,help", "show this help");
  const auto parsed = parse_command(options, argc, argv, "bench");
  if (!parsed) return 0;
  const cxxopts::ParseResult& args = *parsed;
  const RunConfig run = config_from_args(args, {"stages=none"});  // the splits come from --splits
  const HardwareSpec hw = with_vram_cap(load_hardware(args.count("hardware") ? args["hardware"].as<std::string>() : run.hardware), args);
  const int steps = args["steps"].as<int>(), warmup = args["warmup"].as<int>();
  if (steps < 1 || warmup < 0) throw InputError("--steps must be at least 1 and --warmup at least 0; got --steps " + std::to_string(steps) +
                     " --warmup " + std::to_string(warmup));
  std::vector<ScheduleKind> schedules = {run.train.schedule};
  if (args.count("schedules")) {
    schedules.clear();
    for (const std::string& s : split_list(args["schedules"].as<std::string>())) schedules.push_back(parse_schedule_kind(s));
  }
  std::vector<int> counts = {static_cast<int>(run.train.micro_batches)};
  if (args.count("micro-batches")) {
    counts.clear();
    for (const std::string& m : split_list(args["micro-batches"].as<std::string>())) {
      const int v = std::atoi(m.c_str());
      if (v < 1) throw InputError("--micro-batches takes counts like 4,8; got '" + m + "'");
      counts.push_back(v);
    }
  }

  // The planner's choice for the config's options, and the splits to measure.
  PlanRequest request = plan_request_for(run, hw);
  request.choices.micro_batch_counts = {counts.front()};
  request.choices.schedules = {schedules.front()};
  request.choices.checkpointing = {run.train.checkpointing};
  request.choices.shapes = runnable_shapes(hw);
  const std::string splits = args["splits"].as<std::string>();
  std::vector<StageMap> maps;
  if (splits == "all") {
    const SplitList all = every_split(run.model, hw, request.choices.shapes, static_cast<size_t>(args["max-splits"].as<int>()));
    maps = all.maps;
    if (all.total > all.maps.size()) {
      std::printf("%zu splits in all; measuring an evenly spaced %zu of them (--max-splits)\n", all.total, all.maps.size());
    }
  } else if (splits.rfind("top:", 0) == 0) {
    const int k = std::atoi(splits.c_str() + 4);
    if (k < 1) throw InputError("--splits top:K needs K >= 1, got '" + splits + "'");
    request.choices.runners_up = k - 1;
  } else {
    for (const std::string& file : split_list(splits)) {
      StageMap map = load_stage_map_file(file, run.model);
      validate_stage_map(map, run.model, hw);
      maps.push_back(place_stages(map, false, nullptr));
    }
  }
  const PlanOutcome outcome = run_plan(request);
  if (!outcome.fits) {
    std::fprintf(stderr, "%s", format_plan_text(request, outcome, {}).c_str());
    throw InputError("nothing fits hardware '" + hw.name + "' for this model; nothing to bench");
  }
  if (splits.rfind("top:", 0) == 0) {
    for (const Plan& p : outcome.plans) maps.push_back(p.map);
  }
  const StageMap choice = outcome.plans.front().map;
  if (std::none_of(maps.begin(), maps.end(), [&](const StageMap& m) { return m == choice; })) maps.push_back(choice);

  std::vector<BenchCase> cases;
  for (int m : counts) {
    BenchCase reference;
    reference.kind = BenchKind::kReference;
    reference.micro_batches = m;
    cases.push_back(reference);
    for (ScheduleKind kind : schedules) {
      for (const StageMap& map : maps) {
        BenchCase c;
        c.map = map;
        c.schedule = kind;
        c.micro_batches = m;
        c.planner_choice = map == choice && kind == schedules.front() && m == counts.front();
        cases.push_back(c);
      }
    }
  }
  std::printf("bench: %s on %s; %zu cases x (%d warm-up + %d measured) steps, round-robin\n",
              profile_key(run.model, run.train.micro_batch_size).c_str(), hw.name.c_str(), cases.size(), warmup, steps);
  std::printf("predictions from %s\n", time_source(run.model, hw, request.options).c_str());
  std::fflush(stdout);
  BenchOptions bench;
  bench.warmup = warmup;
  bench.steps = steps;
  bench.progress = [](const std::string& line) {
    std::fprintf(stderr, "\r\033[K%s", line.c_str());
    std::fflush(stderr);
  };
  std::vector<BenchResult> results = run_bench(run, hw, cases, bench);

  // The best measured split; and the best with two or more stages, run again beside its naive
  // (unpipelined) version in a round of their own (a one-stage split has nothing to pipeline).
  size_t best = 0, best_pipelined = results.size();
  bool any = false;
  for (size_t i = 0; i < results.size(); ++i) {
    if (results[i].bench.kind != BenchKind::kSplit) continue;
    if (!any || results[i].stats.median_tokens_per_s > results[best].stats.median_tokens_per_s) best = i;
    any = true;
    if (results[i].bench.map.num_stages() > 1 &&
        (best_pipelined == results.size() ||
         results[i].stats.median_tokens_per_s > results[best_pipelined].stats.median_tokens_per_s)) {
      best_pipelined = i;
    }
  }
  if (best_pipelined == results.size()) best_pipelined = best;
  BenchCase again = results[best_pipelined].bench;
  again.label.clear();
  again.planner_choice = false;
  BenchCase naive = again;
  naive.kind = BenchKind::kNaive;
  naive.map = naive_version(again.map, hw);
  const std::vector<BenchResult> versus = run_bench(run, hw, {again, naive}, bench);
  std::fprintf(stderr, "\r\033[K");
  results.push_back(versus[1]);

  std::printf("\n%-52s %6s %3s %9s %9s %7s %6s %6s %8s %8s\n", "split", "sched", "M", "tokens/s", "predicted", "error",
              "bubble", "pred", "state MiB", "act MiB");
  for (const BenchResult& r : results) {
    std::printf("%-52s %6s %3d %9.0f %9.0f %+6.1f%% %6.3f %6.3f %8s %8s%s\n", r.bench.label.substr(0, 52).c_str(),
                r.bench.kind == BenchKind::kReference ? "-" : schedule_kind_name(r.bench.schedule).c_str(),
                r.bench.micro_batches, r.stats.median_tokens_per_s, r.predicted_tokens_per_s, 100.0 * r.error,
                r.measured_bubble, r.predicted_bubble, mib(r.state_bytes).c_str(), mib(r.activation_peak_bytes).c_str(),
                r.bench.planner_choice ? "  <- planner's choice" : (&r == &results[best] ? "  <- best measured" : ""));
  }

  // Verdicts: the planner's choice against the best, the median split's prediction error, pipelined
  // against naive.
  std::vector<const BenchResult*> split_results;
  const BenchResult* chosen = nullptr;
  for (const BenchResult& r : results) {
    if (r.bench.kind != BenchKind::kSplit) continue;
    split_results.push_back(&r);
    if (r.bench.planner_choice) chosen = &r;
  }
  std::sort(split_results.begin(), split_results.end(), [](const BenchResult* a, const BenchResult* b) {
    return a->stats.median_tokens_per_s < b->stats.median_tokens_per_s;
  });
  const BenchResult& median_split = *split_results[split_results.size() / 2];
  std::printf("\nplanner's choice: %.0f tokens/s = %.1f%% of the best measured split (%.0f)\n",
              chosen->stats.median_tokens_per_s,
              100.0 * chosen->stats.median_tokens_per_s / results[best].stats.median_tokens_per_s,
              results[best].stats.median_tokens_per_s);
  std::printf("median split (%s): predicted %.0f, measured %.0f tokens/s (%+.1f%%)\n", median_split.bench.label.c_str(),
              median_split.predicted_tokens_per_s, median_split.stats.median_tokens_per_s, 100.0 * median_split.error);
  std::printf("best pipelined split (%s) against its naive run (same stages, one op at a time, each with all "
              "cores): %.0f / %.0f tokens/s = %.2fx\n",
              versus[0].bench.label.c_str(), versus[0].stats.median_tokens_per_s, versus[1].stats.median_tokens_per_s,
              versus[0].stats.median_tokens_per_s / versus[1].stats.median_tokens_per_s);

  const std::string out = args["out"].as<std::string>();
  if (::mkdir(out.c_str(), 0755) != 0 && errno != EEXIST) throw InputError("cannot create output directory '" + out + "'");
  write_file_atomically(out + "/bench.csv", bench_csv(results));
  nlohmann::json json = nlohmann::json::array();
  for (const BenchResult& r : results) {
    json.push_back({{"kind", bench_kind_name(r.bench.kind)}, {"split", r.bench.label},
                    {"schedule", schedule_kind_name(r.bench.schedule)}, {"micro_batches", r.bench.micro_batches},
                    {"planner_choice", r.bench.planner_choice}, {"tokens_per_s", r.stats.median_tokens_per_s},
                    {"step_seconds", r.stats.median_step_seconds}, {"measured_steps", r.stats.measured},
                    {"predicted_tokens_per_s", r.predicted_tokens_per_s}, {"error", r.error},
                    {"bubble", r.measured_bubble}, {"predicted_bubble", r.predicted_bubble},
                    {"state_bytes", r.state_bytes}, {"activation_peak_bytes", r.activation_peak_bytes},
                    {"planned_bytes", r.planned_bytes}});
  }
  nlohmann::json document;
  document["model"] = profile_key(run.model, run.train.micro_batch_size);
  document["hardware"] = hw.name;
  document["times"] = time_source(run.model, hw, request.options);
  document["results"] = json;
  document["pipelined_split"] = versus[0].bench.label;
  document["pipelined_over_naive"] = versus[0].stats.median_tokens_per_s / versus[1].stats.median_tokens_per_s;
  write_file_atomically(out + "/bench.json", document.dump(2) + "\n");
  write_file_atomically(out + "/bench.gp", bench_gnuplot_script(results, out + "/bench.csv", out + "/bench.png",
                                                                "pipetrain bench: " + profile_key(run.model, run.train.micro_batch_size)));
  if (std::system("command -v gnuplot > /dev/null 2>&1") == 0 &&
      std::system(("gnuplot '" + out + "/bench.gp' 2> '" + out + "/gnuplot.log'").c_str()) == 0) {
    std::printf("wrote %s/bench.csv, bench.json and bench.png\n", out.c_str());
  } else {
    std::printf("wrote %s/bench.csv and bench.json; no plot (gnuplot is not installed: apt-get install gnuplot-nox, then "
                "`gnuplot %s/bench.gp`)\n", out.c_str(), out.c_str());
  }
  return 0;
}

}  // namespace pipetrain::cli
