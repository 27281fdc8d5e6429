#include "runtime/tools/bench.h"

#include <memory>
#include <sstream>

#include "runtime/backends/cpu/cpu_alloc_counter.h"
#include "runtime/backends/cpu/threads.h"
#include "runtime/train/pipeline_trainer.h"
#include "runtime/train/run_plan.h"
#include "runtime/train/trainer.h"
#include "scheduler/statistics.h"

namespace pipetrain {

std::string bench_kind_name(BenchKind kind) {
  switch (kind) {
    case BenchKind::kSplit: return "split";
    case BenchKind::kReference: return "reference";
    case BenchKind::kNaive: return "naive";
  }
  return "?";
}

std::vector<BenchResult> run_bench(const RunConfig& base, const HardwareSpec& hardware, std::vector<BenchCase> cases,
                                   const BenchOptions& options) {
  struct Running {
    std::unique_ptr<Trainer> trainer;
    std::vector<double> step_seconds, bubbles;
    int64_t before_bytes = 0;  // counted bytes before the trainer was built
  };
  const ThreadChoice reference_threads = choose_threads(0, 0, hardware.cpu().cores);
  std::vector<BenchResult> results(cases.size());
  std::vector<Running> running(cases.size());
  for (size_t i = 0; i < cases.size(); ++i) {
    BenchCase& c = cases[i];
    RunConfig run = base;
    run.train.schedule = c.schedule;
    run.train.micro_batches = c.micro_batches;
    run.stages = c.map;
    if (c.label.empty()) {
      c.label = c.kind == BenchKind::kReference ? "reference trainer" : split_label(run.model, c.map);
      if (c.kind == BenchKind::kNaive) c.label = "naive: " + c.label;
    }
    results[i].bench = c;
    running[i].before_bytes = CpuAllocCounter::current_bytes();
    if (c.kind == BenchKind::kReference) {
      running[i].trainer = std::make_unique<ReferenceTrainer>(run, torch::kCPU);
      results[i].state_bytes = CpuAllocCounter::current_bytes() - running[i].before_bytes;  // weights
      continue;
    }
    const Plan plan = plan_of_run(run, hardware);
    results[i].predicted_tokens_per_s = plan.predicted.tokens_per_s;
    results[i].predicted_bubble = plan.predicted.bubble_fraction;
    for (const StageMemory& s : plan.memory.stages) results[i].planned_bytes += s.weights + s.grads + s.optimizer + s.activations;
    running[i].trainer = std::make_unique<PipelineTrainer>(run, plan, hardware, false);
    results[i].state_bytes = CpuAllocCounter::current_bytes() - running[i].before_bytes;  // weights
  }

  const int rounds = options.warmup + options.steps;
  for (int round = 0; round < rounds; ++round) {
    for (size_t i = 0; i < cases.size(); ++i) {
      Running& r = running[i];
      if (cases[i].kind == BenchKind::kReference) apply_threads(reference_threads);
      const int64_t before = CpuAllocCounter::current_bytes();
      CpuAllocCounter::reset_peak();
      const StepRecord record = r.trainer->train_step();
      const int64_t added = CpuAllocCounter::peak_bytes() - before;
      // The first step creates gradients and optimizer state; other cases' steps have freed theirs.
      if (round == 0) results[i].state_bytes += CpuAllocCounter::current_bytes() - before;
      if (round >= options.warmup) results[i].activation_peak_bytes = std::max(results[i].activation_peak_bytes, added);
      r.step_seconds.push_back(record.step_seconds);
      if (record.bubble && round >= options.warmup) r.bubbles.push_back(*record.bubble);
      if (options.progress) {
        char line[256];
        std::snprintf(line, sizeof(line), "round %d/%d  %-48s %8.0f tokens/s", round + 1, rounds, cases[i].label.c_str(),
                      static_cast<double>(base.train.micro_batch_size * cases[i].micro_batches * base.model.seq_len) /
                          record.step_seconds);
        options.progress(line);
      }
    }
  }
  for (size_t i = 0; i < cases.size(); ++i) {
    const int64_t tokens = base.train.micro_batch_size * cases[i].micro_batches * base.model.seq_len;
    results[i].stats = summarize_steps(running[i].step_seconds, tokens, options.warmup);
    results[i].measured_bubble = median(running[i].bubbles);
    if (results[i].predicted_tokens_per_s > 0.0) {
      results[i].error = results[i].predicted_tokens_per_s / results[i].stats.median_tokens_per_s - 1.0;
    }
  }
  return results;
}

std::string bench_csv(const std::vector<BenchResult>& results) {
  std::ostringstream out;
  out << "kind,split,schedule,micro_batches,planner_choice,tokens_per_s,step_seconds,predicted_tokens_per_s,error,"
         "bubble,predicted_bubble,state_bytes,activation_peak_bytes,planned_bytes\n";
  for (const BenchResult& r : results) {
    out << bench_kind_name(r.bench.kind) << ",\"" << r.bench.label << "\"," << r.bench.schedule.name() << ','
        << r.bench.micro_batches << ',' << (r.bench.planner_choice ? 1 : 0) << ',' << r.stats.median_tokens_per_s << ','
        << r.stats.median_step_seconds << ',' << r.predicted_tokens_per_s << ',' << r.error << ',' << r.measured_bubble
        << ',' << r.predicted_bubble << ',' << r.state_bytes << ',' << r.activation_peak_bytes << ',' << r.planned_bytes
        << '\n';
  }
  return out.str();
}

std::string bench_gnuplot_script(const std::vector<BenchResult>& results, const std::string& csv_path,
                                 const std::string& png_path, const std::string& title) {
  size_t best = 0, choice = results.size();
  for (size_t i = 0; i < results.size(); ++i) {
    if (results[i].bench.kind != BenchKind::kSplit) continue;
    if (results[best].bench.kind != BenchKind::kSplit ||
        results[i].stats.median_tokens_per_s > results[best].stats.median_tokens_per_s) {
      best = i;
    }
    if (results[i].bench.planner_choice) choice = i;
  }
  std::ostringstream gp;
  gp << "# Generated by pipetrain bench: measured against predicted tokens/s per split.\n"
     << "set terminal pngcairo size 1400,700 noenhanced\nset output '" << png_path << "'\n"
     << "set datafile separator ','\nset title '" << title << "'\nset ylabel 'tokens/s'\n"
     << "set xtics rotate by 60 right font ',8'\nset key outside top center horizontal\nset style data histogram\n"
     << "set style histogram clustered gap 1\nset style fill solid 0.8 border -1\nset boxwidth 0.9\nset bmargin 18\n"
     << "set yrange [0:*]\nset offsets 0, 0, graph 0.15, 0\n";
  // Row k of the CSV is point k-1 on the x axis (column 0 = row index after the header).
  if (best < results.size()) {
    gp << "set arrow 1 from " << best << ", graph 0.95 to " << best << ", graph 0.88 lw 2 lc rgb 'dark-green'\n"
       << "set label 1 'best measured' at " << best << ", graph 0.97 center tc rgb 'dark-green'\n";
  }
  if (choice < results.size()) {
    gp << "set arrow 2 from " << choice << ", graph 0.85 to " << choice << ", graph 0.78 lw 2 lc rgb 'blue'\n"
       << "set label 2 \"planner's choice\" at " << choice << ", graph 0.87 center tc rgb 'blue'\n";
  }
  gp << "plot '" << csv_path << "' every ::1 using 6:xtic(2) title 'measured' lc rgb '#4477aa', \\\n"
     << "     '' every ::1 using 8 title 'predicted' lc rgb '#ee8866'\n";
  return gp.str();
}

}  // namespace pipetrain
