// Reference trainer throughput on the benchmark model, for the thread setting pipetrain chooses and
// the alternatives it rejects, all in one run.
//
// Model: vocab 256, hidden 256, 8 layers, 8 heads, intermediate 1024, seq 128; micro-batch 4,
// 8 micro-batches per step, AdamW. Settings are interleaved step by step (round-robin) so that a
// noisy neighbour slows all of them alike; each figure is the median over the measured rounds.
//
//   build/bench_reference [--rounds 6] [--warmup 1] [--csv FILE] [--json FILE]
#include <cxxopts.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <memory>
#include <vector>

#include "memory/machine_probe.h"
#include "memory/param_count.h"
#include "runtime/config/run_config.h"
#include "runtime/backends/cpu/threads.h"
#include "runtime/train/trainer.h"
#include "scheduler/statistics.h"

using namespace pipetrain;

namespace {

const std::vector<std::string> kBenchmarkModel = {
    "stages=none", "data.tokenizer=bytes",
    "model.vocab_size=256",     "model.hidden_dim=256",     "model.num_layers=8",     "model.num_heads=8",
    "model.intermediate_size=1024", "model.seq_len=128",    "train.micro_batch_size=4", "train.micro_batches=8",
    "train.optimizer=adamw",    "train.steps=1000000"};

struct Setting {
  ThreadChoice threads;
  bool chosen = false;
  std::unique_ptr<ReferenceTrainer> trainer;
  std::vector<double> tokens_per_s;
};

}  // namespace

int main(int argc, char** argv) {
  cxxopts::Options options("bench_reference", "Reference trainer tokens/s per thread setting on the benchmark model");
  options.add_options()
      ("rounds", "measured steps per setting", cxxopts::value<int>()->default_value("6"))
      ("warmup", "unmeasured steps per setting first", cxxopts::value<int>()->default_value("1"))
      ("csv", "write the table as CSV", cxxopts::value<std::string>())
      ("json", "write the results as JSON", cxxopts::value<std::string>())
      ("h,help", "show this help");
  const auto args = options.parse(argc, argv);
  if (args.count("help")) {
    std::printf("%s\n", options.help().c_str());
    return 0;
  }
  const int rounds = args["rounds"].as<int>();
  const int warmup = args["warmup"].as<int>();

  const RunConfig run = parse_run_config(default_config_text(), "benchmark model", kBenchmarkModel);
  const int cores = usable_cores();
  const ThreadChoice chosen = choose_threads(0, 0, cores);
  std::vector<Setting> settings;
  settings.push_back({chosen, true, nullptr, {}});
  for (const auto& [intra, blas] : std::vector<std::pair<int, int>>{{1, 1}, {cores, 1}, {cores, cores}}) {
    if (intra == chosen.intra_op_threads && blas == chosen.blas_threads) continue;
    settings.push_back({choose_threads(intra, blas, cores), false, nullptr, {}});
  }
  for (Setting& s : settings) s.trainer = std::make_unique<ReferenceTrainer>(run, torch::kCPU);

  std::fprintf(stderr, "benchmark model: %lld parameters; %d settings x (%d warm-up + %d measured) steps of %lld tokens\n",
               static_cast<long long>(total_param_count(run.model)), static_cast<int>(settings.size()), warmup, rounds,
               static_cast<long long>(run.train.micro_batch_size * run.train.micro_batches * run.model.seq_len));
  for (int round = 0; round < warmup + rounds; ++round) {
    for (Setting& s : settings) {
      apply_threads(s.threads);
      const StepRecord r = s.trainer->train_step();
      if (round >= warmup) s.tokens_per_s.push_back(r.tokens_per_s);
    }
    std::fprintf(stderr, "\rround %d/%d", round + 1, warmup + rounds);
  }
  std::fprintf(stderr, "\n");

  const BlasInfo blas = detect_blas();
  const double chosen_rate = median(settings.front().tokens_per_s);
  nlohmann::ordered_json json;
  json["model"] = "vocab 256, hidden 256, 8 layers, 8 heads, intermediate 1024, seq 128, micro-batch 4 x 8, AdamW";
  json["params"] = total_param_count(run.model);
  json["blas"] = blas.name + " " + blas.config;
  json["usable_cores"] = cores;
  json["rounds"] = rounds;
  std::printf("| intra-op | BLAS | chosen | tokens/s (median) | vs chosen |\n|---:|---:|:---:|---:|---:|\n");
  std::string csv = "intra_op_threads,blas_threads,chosen,tokens_per_s_median,ratio_to_chosen\n";
  for (const Setting& s : settings) {
    const double rate = median(s.tokens_per_s);
    std::printf("| %d | %d | %s | %.0f | %.2f |\n", s.threads.intra_op_threads, s.threads.blas_threads,
                s.chosen ? "yes" : "", rate, rate / chosen_rate);
    char row[128];
    std::snprintf(row, sizeof(row), "%d,%d,%d,%.1f,%.3f\n", s.threads.intra_op_threads, s.threads.blas_threads,
                  s.chosen ? 1 : 0, rate, rate / chosen_rate);
    csv += row;
    json["settings"].push_back({{"intra_op_threads", s.threads.intra_op_threads},
                                {"blas_threads", s.threads.blas_threads},
                                {"chosen", s.chosen},
                                {"tokens_per_s", s.tokens_per_s},
                                {"tokens_per_s_median", rate}});
  }
  if (args.count("csv")) std::ofstream(args["csv"].as<std::string>()) << csv;
  if (args.count("json")) std::ofstream(args["json"].as<std::string>()) << json.dump(2) << "\n";
  return 0;
}
