// How long `plan --auto` takes to choose a split, against the layer count (the planner issue asks
// for under a second at 200 layers). Median of --repeats runs per size, on the rtx2070s-wsl preset
// (CPU -> GPU -> CPU and its halves, 8 cores to split) with every option left open.
//
//   build/bench_planner [--repeats 5]
#include <cxxopts.hpp>

#include <chrono>
#include <cstdio>

#include "runtime/config/hardware_file.h"
#include "runtime/tools/hardware_probe.h"
#include "runtime/train/trainer.h"  // median
#include "scheduler/planner.h"
#include "scheduler/statistics.h"

using namespace pipetrain;

int main(int argc, char** argv) {
  cxxopts::Options options("bench_planner", "Auto-planner wall time against layer count");
  options.add_options()("repeats", "runs per size", cxxopts::value<int>()->default_value("5"))("h,help", "show this help");
  const auto args = options.parse(argc, argv);
  if (args.count("help")) {
    std::printf("%s\n", options.help().c_str());
    return 0;
  }
  const HardwareSpec hw = load_hardware("rtx2070s-wsl");
  std::printf("| blocks | candidates | fitting | simulated | seconds (median) |\n|---:|---:|---:|---:|---:|\n");
  for (int64_t blocks : {24, 60, 120, 198}) {
    ModelConfig m;
    m.hidden_dim = 1024;
    m.num_heads = 16;
    m.intermediate_size = 4096;
    m.seq_len = 512;
    m.num_layers = blocks;
    PlanOptions base;
    base.micro_batch_size = 2;
    std::vector<double> seconds;
    PlannerResult r;
    for (int i = 0; i < args["repeats"].as<int>(); ++i) {
      const auto start = std::chrono::steady_clock::now();
      r = plan_auto(describe_model(m), hw, base, PlannerChoices{});
      seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    std::printf("| %lld (%lld layers) | %lld | %lld | %lld | %.3f |\n", static_cast<long long>(blocks),
                static_cast<long long>(blocks + 2), static_cast<long long>(r.candidates), static_cast<long long>(r.feasible),
                static_cast<long long>(r.simulated), median(seconds));
  }
  return 0;
}
