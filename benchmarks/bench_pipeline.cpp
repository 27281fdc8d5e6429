// Two CPU stages with one core each against the reference trainer, on the benchmark model, in one run.
//
// (a) the reference trainer with its best thread setting (1 intra-op x all cores of OpenBLAS), and
// (b) the model cut in two halves, each stage owning one core (pinned, 1 thread), GPipe and 1F1B,
// for each micro-batch count M. All settings advance one step at a time, round-robin, so a noisy
// neighbour slows them alike; figures are medians over the measured rounds. For each pipeline the
// step time and bubble are set beside the simulator's replay of the same schedule with the measured
// op times. Memory: GPipe and 1F1B at the largest M each run in a child process of their own, whose
// peak RSS and counted CPU allocations are compared with the planner's estimate.
//
//   build/bench_pipeline [--rounds 3] [--warmup 1] [--micro-batches 2,4,8,16] [--csv F] [--json F]
#include <cxxopts.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <vector>

#include "memory/estimate.h"
#include "memory/machine_probe.h"
#include "memory/model_desc.h"
#include "memory/param_count.h"
#include "runtime/config/run_config.h"
#include "runtime/backends/cpu/cpu_alloc_counter.h"
#include "runtime/backends/cpu/host_allocator.h"
#include "runtime/train/pipeline_trainer.h"
#include "runtime/train/run_plan.h"
#include "runtime/backends/cpu/threads.h"
#include "runtime/train/trainer.h"
#include "scheduler/planner.h"
#include "scheduler/statistics.h"

using namespace pipetrain;

namespace {

// The benchmark model of bench_reference: vocab 256, hidden 256, 8 blocks, 8 heads, ff 1024, seq 128,
// micro-batches of 4, AdamW.
RunConfig benchmark_run(int micro_batches, ScheduleKind schedule) {
  RunConfig run = parse_run_config(
      default_config_text(), "benchmark model",
      {"stages=none", "data.tokenizer=bytes", "model.vocab_size=256", "model.hidden_dim=256", "model.num_layers=8", "model.num_heads=8",
       "model.intermediate_size=1024", "model.seq_len=128", "train.micro_batch_size=4",
       "train.micro_batches=" + std::to_string(micro_batches), "train.optimizer=adamw", "train.steps=1000000",
       "train.schedule=" + schedule.name()});
  return run;
}

// Two halves, one core each: embed + blocks 0-3 | blocks 4-7 + head.
StageMap two_halves() { return make_stage_map({DeviceId::cpu(), DeviceId::cpu()}, {4, 9}, {1, 1}); }

HardwareSpec this_host() {
  HardwareSpec hw;
  hw.name = "this host";
  DeviceSpec cpu;
  cpu.id = DeviceId::cpu();
  cpu.memory_bytes = probe_machine_memory().ram_total_bytes;
  cpu.flops_per_s = 1e10;  // unused: predictions here come from measured op times
  cpu.memory_bytes_per_s = 1e10;  // likewise
  cpu.cores = usable_cores();
  hw.devices = {cpu};
  return hw;
}

struct Setting {
  std::string name;
  int micro_batches = 0;
  bool reference = false;
  ScheduleKind schedule = ScheduleKind::named("gpipe");
  std::unique_ptr<Trainer> trainer;
  std::vector<double> tokens_per_s, step_seconds;
};

std::vector<int> parse_counts(const std::string& text) {
  std::vector<int> counts;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) counts.push_back(std::stoi(item));
  return counts;
}

// Child process: one pipeline at M micro-batches; peak RSS and counted allocations against the plan.
int memory_probe(ScheduleKind schedule, bool checkpointing, int micro_batches) {
  CpuAllocCounter::install();
  const int64_t rss_before = current_rss_bytes();
  RunConfig run = benchmark_run(micro_batches, schedule);
  run.train.checkpointing = checkpointing;
  run.stages = two_halves();
  const HardwareSpec hw = this_host();
  PipelineTrainer trainer(run, plan_of_run(run, hw), hw, false);
  trainer.train_step();  // gradients and optimizer state now exist
  const int64_t state_bytes = CpuAllocCounter::current_bytes();
  CpuAllocCounter::reset_peak();
  trainer.train_step();
  const int64_t counted_activation_peak = CpuAllocCounter::peak_bytes() - state_bytes;
  const int64_t rss_peak = peak_rss_bytes() - rss_before;

  const MemoryEstimate estimate = trainer.plan().memory;
  int64_t estimated_total = 0, estimated_activations = 0;
  for (const StageMemory& s : estimate.stages) {
    estimated_total += s.weights + s.grads + s.optimizer + s.activations;
    estimated_activations += s.activations;
  }
  const nlohmann::json out = {{"schedule", schedule.name()},
                              {"checkpointing", checkpointing},
                              {"micro_batches", micro_batches},
                              {"peak_rss_delta_bytes", rss_peak},
                              {"estimated_total_bytes", estimated_total},
                              {"counted_state_bytes", state_bytes},
                              {"counted_activation_peak_bytes", counted_activation_peak},
                              {"estimated_activation_bytes", estimated_activations}};
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

nlohmann::json run_child(const std::string& self, ScheduleKind schedule, bool checkpointing, int micro_batches) {
  const std::string command = self + " --memory-probe " + schedule.name() + (checkpointing ? "+ckpt" : "") +
                              " --micro-batches " + std::to_string(micro_batches);
  std::FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) throw std::runtime_error("cannot run " + command);
  std::string text;
  char buffer[4096];
  size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) text.append(buffer, n);
  if (pclose(pipe) != 0) throw std::runtime_error(command + " failed: " + text);
  return nlohmann::json::parse(text.substr(text.rfind('{')));
}

}  // namespace

int main(int argc, char** argv) {
  cxxopts::Options options("bench_pipeline", "Two CPU stages with one core each against the reference trainer");
  options.add_options()
      ("rounds", "measured steps per setting", cxxopts::value<int>()->default_value("3"))
      ("warmup", "unmeasured steps per setting first", cxxopts::value<int>()->default_value("1"))
      ("micro-batches", "micro-batch counts to compare", cxxopts::value<std::string>()->default_value("2,4,8,16"))
      ("csv", "write the table as CSV", cxxopts::value<std::string>())
      ("json", "write the results as JSON", cxxopts::value<std::string>())
      ("memory-probe", "internal: measure one schedule's memory in this process", cxxopts::value<std::string>())
      ("h,help", "show this help");
  const auto args = options.parse(argc, argv);
  if (args.count("help")) {
    std::printf("%s\n", options.help().c_str());
    return 0;
  }
  if (!std::getenv("PIPETRAIN_GLIBC_MALLOC")) HostCachingAllocator::install();
  const std::vector<int> counts = parse_counts(args["micro-batches"].as<std::string>());
  if (args.count("memory-probe")) {
    std::string probe = args["memory-probe"].as<std::string>();
    const bool checkpointing = probe.size() > 5 && probe.substr(probe.size() - 5) == "+ckpt";
    if (checkpointing) probe.resize(probe.size() - 5);
    return memory_probe(ScheduleKind::named(probe), checkpointing, counts.back());
  }
  const int rounds = args["rounds"].as<int>();
  const int warmup = args["warmup"].as<int>();
  if (rounds < 1 || warmup < 0) {
    std::fprintf(stderr, "error: --rounds must be at least 1 and --warmup at least 0; got --rounds %d --warmup %d\n",
                 rounds, warmup);
    return 2;
  }
  const int cores = usable_cores();
  const ThreadChoice best = choose_threads(0, 0, cores);
  const HardwareSpec hw = this_host();

  std::vector<Setting> settings;
  for (int m : counts) {
    Setting ref{"reference " + std::to_string(best.intra_op_threads) + "x" + std::to_string(best.blas_threads), m, true};
    ref.trainer = std::make_unique<ReferenceTrainer>(benchmark_run(m, ScheduleKind::named("gpipe")), torch::kCPU);
    settings.push_back(std::move(ref));
    for (ScheduleKind kind : {ScheduleKind::named("gpipe"), ScheduleKind::named("1f1b")}) {
      Setting pipe{"2 stages x 1 core, " + kind.name(), m, false, kind};
      RunConfig run = benchmark_run(m, kind);
      run.stages = two_halves();
      pipe.trainer = std::make_unique<PipelineTrainer>(run, plan_of_run(run, hw), hw, false);
      settings.push_back(std::move(pipe));
    }
  }
  const RunConfig model_run = benchmark_run(counts.front(), ScheduleKind::named("gpipe"));
  std::fprintf(stderr, "benchmark model: %lld parameters; %zu settings x (%d warm-up + %d measured) steps; %d cores\n",
               static_cast<long long>(total_param_count(model_run.model)), settings.size(), warmup, rounds, cores);

  for (int round = 0; round < warmup + rounds; ++round) {
    for (Setting& s : settings) {
      if (s.reference) apply_threads(best);
      const StepRecord r = s.trainer->train_step();
      if (round >= warmup) {
        s.tokens_per_s.push_back(r.tokens_per_s);
        s.step_seconds.push_back(r.step_seconds);
      }
      std::fprintf(stderr, "\rround %d/%d  %-32s M=%-3d %7.0f tokens/s", round + 1, warmup + rounds, s.name.c_str(),
                   s.micro_batches, r.tokens_per_s);
    }
  }
  std::fprintf(stderr, "\n");

  nlohmann::json results = nlohmann::json::array();
  std::ostringstream csv;
  csv << "setting,micro_batches,tokens_per_s,ratio_to_reference,step_s,predicted_step_s,step_error,bubble,"
         "predicted_bubble\n";
  std::printf("%-28s %4s %10s %8s %9s %9s %7s %7s %7s\n", "setting", "M", "tokens/s", "vs ref", "step ms", "pred ms",
              "error", "bubble", "pred");
  double reference_rate = 0.0;
  for (Setting& s : settings) {
    const double rate = median(s.tokens_per_s);
    const double step = median(s.step_seconds);
    if (s.reference) reference_rate = rate;
    nlohmann::json row = {{"setting", s.name}, {"micro_batches", s.micro_batches}, {"tokens_per_s", rate},
                          {"ratio_to_reference", rate / reference_rate}, {"step_seconds", step}};
    double predicted = 0.0, bubble = 0.0, predicted_bubble = 0.0;
    if (!s.reference) {
      const PipelineSummary p = dynamic_cast<PipelineTrainer&>(*s.trainer).summary();
      predicted = p.predicted_step_seconds;
      bubble = p.measured_bubble;
      predicted_bubble = p.predicted_bubble;
      row["predicted_step_seconds"] = predicted;
      row["step_error"] = predicted / step - 1.0;
      row["bubble"] = bubble;
      row["predicted_bubble"] = predicted_bubble;
      row["forward_seconds"] = {p.op_times.stages[0].forward_seconds, p.op_times.stages[1].forward_seconds};
      row["backward_seconds"] = {p.op_times.stages[0].backward_seconds, p.op_times.stages[1].backward_seconds};
    }
    results.push_back(row);
    if (s.reference) {
      std::printf("%-28s %4d %10.0f %8.2f %9.1f\n", s.name.c_str(), s.micro_batches, rate, 1.0, step * 1e3);
    } else {
      std::printf("%-28s %4d %10.0f %8.2f %9.1f %9.1f %+6.1f%% %7.3f %7.3f\n", s.name.c_str(), s.micro_batches, rate,
                  rate / reference_rate, step * 1e3, predicted * 1e3, 100.0 * (predicted / step - 1.0), bubble,
                  predicted_bubble);
    }
    csv << '"' << s.name << "\"," << s.micro_batches << ',' << rate << ',' << rate / reference_rate << ',' << step << ','
        << (s.reference ? "" : std::to_string(predicted)) << ','
        << (s.reference ? "" : std::to_string(predicted / step - 1.0)) << ','
        << (s.reference ? "" : std::to_string(bubble)) << ',' << (s.reference ? "" : std::to_string(predicted_bubble))
        << '\n';
  }
  settings.clear();

  // Memory at the largest M, each schedule in a process of its own (peak RSS is per process).
  nlohmann::json memory = nlohmann::json::array();
  std::printf("\nmemory at M=%d (2 stages x 1 core; child processes):\n", counts.back());
  std::printf("%-11s %16s %16s %7s %18s %18s %7s\n", "", "peak RSS delta", "planned total", "ratio", "counted act. peak",
              "planned act.", "ratio");
  auto print_row = [](const std::string& label, double rss, double planned, double act, double planned_act) {
    std::printf("%-11s %12.1f MiB %12.1f MiB %7.3f %14.1f MiB %14.1f MiB %7.3f\n", label.c_str(), rss / 1048576.0,
                planned / 1048576.0, rss / planned, act / 1048576.0, planned_act / 1048576.0, act / planned_act);
  };
  for (bool checkpointing : {false, true}) {
    for (ScheduleKind kind : {ScheduleKind::named("gpipe"), ScheduleKind::named("1f1b")}) {
      const nlohmann::json m = run_child(argv[0], kind, checkpointing, counts.back());
      print_row(kind.name() + (checkpointing ? "+ckpt" : ""), m["peak_rss_delta_bytes"].get<double>(),
                m["estimated_total_bytes"].get<double>(), m["counted_activation_peak_bytes"].get<double>(),
                m["estimated_activation_bytes"].get<double>());
      memory.push_back(m);
    }
    // What the schedule changes, with the process's fixed overhead (libraries' buffers, threads) cancelled.
    const size_t g = memory.size() - 2, o = memory.size() - 1;
    const auto delta = [&](const char* key) { return memory[g][key].get<double>() - memory[o][key].get<double>(); };
    print_row(checkpointing ? "diff+ckpt" : "diff", delta("peak_rss_delta_bytes"), delta("estimated_total_bytes"),
              delta("counted_activation_peak_bytes"), delta("estimated_activation_bytes"));
  }

  if (args.count("csv")) std::ofstream(args["csv"].as<std::string>()) << csv.str();
  if (args.count("json")) {
    std::ofstream(args["json"].as<std::string>())
        << nlohmann::json{{"cores", cores}, {"rounds", rounds}, {"warmup", warmup}, {"results", results}, {"memory", memory}}
               .dump(2)
        << "\n";
  }
  return 0;
}
