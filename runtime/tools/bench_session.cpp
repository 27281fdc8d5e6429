#include "runtime/tools/bench_session.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <cmath>
#include <cstdlib>
#include <optional>

#include "memory/errors.h"
#include "runtime/backends/registry.h"
#include "runtime/io/atomic_file.h"
#include "runtime/io/metrics.h"
#include "runtime/io/plan_report.h"
#include "runtime/io/run_dir.h"
#include "runtime/tools/bench.h"
#include "runtime/tools/calibration.h"
#include "runtime/train/run_plan.h"
#include "scheduler/bench_splits.h"
#include "scheduler/cost_model.h"
#include "scheduler/statistics.h"

namespace pipetrain {
namespace {

std::string mib(int64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.0f", static_cast<double>(bytes) / 1048576.0);
  return text;
}

// What the planner would choose for the request's first schedule and count.
PlanRequest planner_request(const BenchRequest& request) {
  PlanRequest planning = plan_request_for(request.run, request.hardware);
  planning.choices.micro_batch_counts = {request.micro_batch_counts.front()};
  planning.choices.schedules = {request.schedules.front()};
  planning.choices.checkpointing = {request.run.train.checkpointing};
  planning.choices.shapes = runnable_shapes(request.hardware);
  if (request.splits == SplitSelection::kTop) planning.choices.runners_up = request.top - 1;
  return planning;
}

// The splits to time, the planner's choice among them (added when it is not).
std::vector<StageMap> choose_splits(const BenchRequest& request, const PlanRequest& planning, StageMap& choice) {
  std::vector<StageMap> maps = request.maps;
  if (request.splits == SplitSelection::kAll) {
    const SplitList all = every_split(request.run.model, request.hardware, planning.choices.shapes, request.max_splits);
    maps = all.maps;
    if (all.total > all.maps.size()) {
      std::printf("%zu splits in all; measuring an evenly spaced %zu of them (--max-splits)\n", all.total, all.maps.size());
    }
  }
  const PlanOutcome outcome = run_plan(planning);
  if (!outcome.fits) {
    std::fprintf(stderr, "%s", format_plan_text(planning, outcome, {}).c_str());
    throw InputError("nothing fits hardware '" + request.hardware.name + "' for this model; nothing to bench");
  }
  if (request.splits == SplitSelection::kTop) {
    for (const Plan& p : outcome.plans) maps.push_back(p.map);
  }
  choice = outcome.plans.front().map;
  if (std::none_of(maps.begin(), maps.end(), [&](const StageMap& m) { return m == choice; })) maps.push_back(choice);
  return maps;
}

// Per micro-batch count: the reference trainer, then every schedule of every split.
std::vector<BenchCase> bench_cases(const BenchRequest& request, const std::vector<StageMap>& maps, const StageMap& choice) {
  std::vector<BenchCase> cases;
  for (int m : request.micro_batch_counts) {
    BenchCase reference;
    reference.kind = BenchKind::kReference;
    reference.micro_batches = m;
    cases.push_back(reference);
    for (ScheduleKind kind : request.schedules) {
      for (const StageMap& map : maps) {
        BenchCase c;
        c.map = map;
        c.schedule = kind;
        c.micro_batches = m;
        c.planner_choice = map == choice && kind == request.schedules.front() && m == request.micro_batch_counts.front();
        cases.push_back(c);
      }
    }
  }
  return cases;
}

// The best measured split, and the best with two or more stages (a one-stage split has nothing to
// pipeline; the best overall when there is none).
std::pair<size_t, size_t> best_splits(const std::vector<BenchResult>& results) {
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
  return {best, best_pipelined == results.size() ? best : best_pipelined};
}

// A split run again beside its naive (unpipelined) version, in a round of their own.
std::vector<BenchResult> against_naive(const BenchRequest& request, const BenchResult& split, const BenchOptions& options) {
  BenchCase again = split.bench;
  again.label.clear();
  again.planner_choice = false;
  BenchCase naive = again;
  naive.kind = BenchKind::kNaive;
  naive.map = naive_version(again.map);
  return run_bench(request.run, request.hardware, {again, naive}, options);
}

// The split rows (not the reference trainer, not the naive baselines), in the table's order.
std::vector<const BenchResult*> splits_only(const std::vector<BenchResult>& results) {
  std::vector<const BenchResult*> splits;
  for (const BenchResult& r : results) {
    if (r.bench.kind == BenchKind::kSplit) splits.push_back(&r);
  }
  return splits;
}

// The splits' prediction errors: their median and worst magnitude.
ErrorSummary split_errors(const std::vector<BenchResult>& results) {
  std::vector<double> errors;
  for (const BenchResult* r : splits_only(results)) errors.push_back(r->error);
  return summarise_errors(errors);
}

void print_table(const std::vector<BenchResult>& results, size_t best) {
  std::printf("\n%-52s %6s %3s %9s %9s %7s %6s %6s %8s %8s\n", "split", "sched", "M", "tokens/s", "predicted", "error",
              "bubble", "pred", "state MiB", "act MiB");
  for (const BenchResult& r : results) {
    std::printf("%-52s %6s %3d %9.0f %9.0f %+6.1f%% %6.3f %6.3f %8s %8s%s\n", r.bench.label.substr(0, 52).c_str(),
                r.bench.kind == BenchKind::kReference ? "-" : r.bench.schedule.name().c_str(), r.bench.micro_batches,
                r.stats.median_tokens_per_s, r.predicted_tokens_per_s, 100.0 * r.error, r.measured_bubble,
                r.predicted_bubble, mib(r.state_bytes).c_str(), mib(r.activation_peak_bytes).c_str(),
                r.bench.planner_choice ? "  <- planner's choice" : (&r == &results[best] ? "  <- best measured" : ""));
  }
}

// The planner's choice against the best, the median split's prediction error, pipelined against naive.
void print_verdicts(const std::vector<BenchResult>& results, size_t best, const std::vector<BenchResult>& versus) {
  std::vector<const BenchResult*> splits = splits_only(results);
  const BenchResult* chosen = nullptr;
  for (const BenchResult* r : splits) {
    if (r->bench.planner_choice) chosen = r;
  }
  std::sort(splits.begin(), splits.end(), [](const BenchResult* a, const BenchResult* b) {
    return a->stats.median_tokens_per_s < b->stats.median_tokens_per_s;
  });
  const BenchResult& median_split = *splits[splits.size() / 2];
  std::printf("\nplanner's choice: %.0f tokens/s = %.1f%% of the best measured split (%.0f)\n",
              chosen->stats.median_tokens_per_s,
              100.0 * chosen->stats.median_tokens_per_s / results[best].stats.median_tokens_per_s,
              results[best].stats.median_tokens_per_s);
  std::printf("median split (%s): predicted %.0f, measured %.0f tokens/s (%+.1f%%)\n", median_split.bench.label.c_str(),
              median_split.predicted_tokens_per_s, median_split.stats.median_tokens_per_s, 100.0 * median_split.error);
  const ErrorSummary errors = split_errors(results);
  std::printf("prediction error over the %zu splits: median |error| %.1f%%, worst %.1f%% (%s)\n", splits.size(),
              100.0 * errors.median_abs, 100.0 * errors.worst_abs, splits_only(results)[errors.worst]->bench.label.c_str());
  std::printf("best pipelined split (%s) against its naive run (same stages, one op at a time, each with all "
              "cores): %.0f / %.0f tokens/s = %.2fx\n",
              versus[0].bench.label.c_str(), versus[0].stats.median_tokens_per_s, versus[1].stats.median_tokens_per_s,
              versus[0].stats.median_tokens_per_s / versus[1].stats.median_tokens_per_s);
}

// How far the machine itself moved while the splits ran, by the calibration (runtime/tools/
// calibration.h: the profile's training block when it recorded one, and the GEMM rate) measured
// before and after (with a measured profile only: what it recorded is the reference). Every
// prediction error includes that drift; past the 5% a prediction is judged by, the bench says so.
struct MachineDrift {
  Calibration before, after;
  bool by_workload() const { return before.by_workload() && after.by_workload(); }
  // Speed after over speed before, minus 1: negative when the machine slowed down.
  double moved() const {
    return by_workload() ? before.measured.all_cores_seconds / after.measured.all_cores_seconds - 1.0 : gemm_moved();
  }
  double gemm_moved() const { return after.measured_flops_per_s / before.measured_flops_per_s - 1.0; }
};
constexpr double kDriftWarning = 0.05;

void print_drift(const MachineDrift& d) {
  const char* advice = std::abs(d.moved()) > kDriftWarning
                           ? "; the errors above include that much of the machine's own change: bench again when it is quieter"
                           : "";
  if (d.by_workload()) {
    std::printf("machine: a training block took %.2f ms on all cores before the bench, %.2f after (the profile recorded "
                "%.2f): its speed moved %+.1f%% while the splits ran%s\n",
                d.before.measured.all_cores_seconds * 1e3, d.after.measured.all_cores_seconds * 1e3,
                d.before.recorded.all_cores_seconds * 1e3, 100.0 * d.moved(), advice);
    std::printf("machine: alone on one core: %s before; %s after; %s profiled; GEMM %.1f GFLOP/s before, %.1f after "
                "(%+.1f%%)\n",
                core_times(d.before.measured).c_str(), core_times(d.after.measured).c_str(),
                core_times(d.before.recorded).c_str(), d.before.measured_flops_per_s / 1e9,
                d.after.measured_flops_per_s / 1e9, 100.0 * d.gemm_moved());
    return;
  }
  std::printf("machine: GEMM %.1f GFLOP/s before the bench, %.1f after (the profile recorded %.1f): it moved %+.1f%% while "
              "the splits ran%s\n",
              d.before.measured_flops_per_s / 1e9, d.after.measured_flops_per_s / 1e9, d.before.recorded_flops_per_s / 1e9,
              100.0 * d.moved(), advice);
}

nlohmann::json milliseconds(const std::vector<double>& seconds) {
  nlohmann::json out = nlohmann::json::array();
  for (double t : seconds) out.push_back(t * 1e3);
  return out;
}

void write_outputs(const BenchRequest& request, const PlanRequest& planning, const std::vector<BenchResult>& results,
                   const std::vector<BenchResult>& versus, const std::optional<MachineDrift>& drift) {
  const std::string& out = request.out_dir;
  const std::string model = profile_key(request.run.model, request.run.train.micro_batch_size);
  make_dirs(out);
  write_file_atomically(out + "/bench.csv", bench_csv(results));
  nlohmann::json json = nlohmann::json::array();
  for (const BenchResult& r : results) {
    json.push_back({{"kind", bench_kind_name(r.bench.kind)}, {"split", r.bench.label},
                    {"schedule", r.bench.schedule.name()}, {"micro_batches", r.bench.micro_batches},
                    {"planner_choice", r.bench.planner_choice}, {"tokens_per_s", r.stats.median_tokens_per_s},
                    {"step_seconds", r.stats.median_step_seconds}, {"measured_steps", r.stats.measured},
                    {"predicted_tokens_per_s", r.predicted_tokens_per_s}, {"error", r.error},
                    {"bubble", r.measured_bubble}, {"predicted_bubble", r.predicted_bubble},
                    {"state_bytes", r.state_bytes}, {"activation_peak_bytes", r.activation_peak_bytes},
                    {"planned_bytes", r.planned_bytes}});
  }
  nlohmann::json document;
  document["model"] = model;
  document["hardware"] = request.hardware.name;
  document["times"] = time_source(request.run.model, request.hardware, planning.options);
  document["results"] = json;
  const ErrorSummary errors = split_errors(results);
  document["median_abs_error"] = errors.median_abs;
  document["worst_abs_error"] = errors.worst_abs;
  document["pipelined_split"] = versus[0].bench.label;
  document["pipelined_over_naive"] = versus[0].stats.median_tokens_per_s / versus[1].stats.median_tokens_per_s;
  if (drift) {
    document["machine_gemm_flops_per_s"] = {{"profile", drift->before.recorded_flops_per_s},
                                            {"before", drift->before.measured_flops_per_s},
                                            {"after", drift->after.measured_flops_per_s},
                                            {"moved", drift->gemm_moved()}};
    if (drift->by_workload()) {
      const auto ms = [](const CpuCalibration& c) {
        return nlohmann::json{{"all_cores", c.all_cores_seconds * 1e3}, {"alone_per_core", milliseconds(c.core_seconds)}};
      };
      document["machine_calibration_ms"] = {{"profile", ms(drift->before.recorded)},
                                            {"before", ms(drift->before.measured)},
                                            {"after", ms(drift->after.measured)},
                                            {"moved", drift->moved()}};
    }
  }
  write_file_atomically(out + "/bench.json", document.dump(2) + "\n");
  write_file_atomically(out + "/bench.gp",
                        bench_gnuplot_script(results, out + "/bench.csv", out + "/bench.png", "pipetrain bench: " + model));
  if (std::system("command -v gnuplot > /dev/null 2>&1") == 0 &&
      std::system(("gnuplot '" + out + "/bench.gp' 2> '" + out + "/gnuplot.log'").c_str()) == 0) {
    std::printf("wrote %s/bench.csv, bench.json and bench.png\n", out.c_str());
  } else {
    std::printf("wrote %s/bench.csv and bench.json; no plot (gnuplot is not installed: apt-get install gnuplot-nox, then "
                "`gnuplot %s/bench.gp`)\n", out.c_str(), out.c_str());
  }
}

}  // namespace

int run_bench_session(const BenchRequest& request) {
  const PlanRequest planning = planner_request(request);
  StageMap choice;
  const std::vector<StageMap> maps = choose_splits(request, planning, choice);
  const std::vector<BenchCase> cases = bench_cases(request, maps, choice);
  std::printf("bench: %s on %s; %zu cases x (%d warm-up + %d measured) steps, round-robin\n",
              profile_key(request.run.model, request.run.train.micro_batch_size).c_str(), request.hardware.name.c_str(),
              cases.size(), request.warmup, request.steps);
  std::printf("predictions from %s\n", time_source(request.run.model, request.hardware, planning.options).c_str());
  std::fflush(stdout);
  BenchOptions options;
  options.warmup = request.warmup;
  options.steps = request.steps;
  StatusLine status(stderr);
  options.progress = [&status](const std::string& line) { status.show(line); };
  std::optional<MachineDrift> drift;
  if (is_measured_profile(request.hardware)) {
    drift = MachineDrift{calibrate_cpu(request.hardware), {}};
  }
  std::vector<BenchResult> results = run_bench(request.run, request.hardware, cases, options);
  if (drift) drift->after = calibrate_cpu(request.hardware);
  const auto [best, best_pipelined] = best_splits(results);
  const std::vector<BenchResult> versus = against_naive(request, results[best_pipelined], options);
  status.finish();
  results.push_back(versus[1]);
  print_table(results, best);
  print_verdicts(results, best, versus);
  if (drift) print_drift(*drift);
  write_outputs(request, planning, results, versus, drift);
  return 0;
}

}  // namespace pipetrain
