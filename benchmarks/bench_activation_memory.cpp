// The planner's activation estimate against bytes counted by an instrumented CPU allocator.
//
// For each config and each number of micro-batches held (1, and 4 as GPipe holds them), the whole
// model runs `held` forwards (keeping their graphs), then the backwards. The counting allocator
// (runtime/backends/cpu/cpu_alloc_counter.h) reports the bytes held after the forwards and the peak during the
// backwards, both above the starting point (weights and gradients already allocated). The estimate
// is memory/estimate.h's activations for one stage holding `held` micro-batches.
//
//   build/bench_activation_memory [--csv FILE]
#include <cxxopts.hpp>

#include <cstdio>
#include <fstream>

#include "runtime/tools/activation_probe.h"
#include "runtime/backends/cpu/threads.h"

using namespace pipetrain;

int main(int argc, char** argv) {
  cxxopts::Options options("bench_activation_memory", "Activation estimate against counted allocations");
  options.add_options()("csv", "write the table as CSV", cxxopts::value<std::string>())("h,help", "show this help");
  const auto args = options.parse(argc, argv);
  if (args.count("help")) {
    std::printf("%s\n", options.help().c_str());
    return 0;
  }
  apply_threads(choose_threads(1, 1, 1));
  struct Config {
    const char* name;
    int64_t hidden, layers, heads, inter, seq, batch;
  };
  const Config configs[] = {{"default (h256 L4 T128, b8)", 256, 4, 4, 1024, 128, 8},
                            {"benchmark (h256 L8 n8 T128, b4)", 256, 8, 8, 1024, 128, 4},
                            {"wide (h512 L2 n8 T64, b4)", 512, 2, 8, 2048, 64, 4},
                            {"long (h128 L4 n4 T512, b2)", 128, 4, 4, 512, 512, 2}};
  std::printf("| config | held | measured saved (MiB) | measured peak (MiB) | estimate (MiB) | estimate / peak |\n");
  std::printf("|---|---:|---:|---:|---:|---:|\n");
  std::string csv = "config,held,measured_saved_bytes,measured_peak_bytes,estimate_bytes,ratio\n";
  for (const Config& c : configs) {
    ModelConfig m;
    m.hidden_dim = c.hidden;
    m.num_layers = c.layers;
    m.num_heads = c.heads;
    m.intermediate_size = c.inter;
    m.seq_len = c.seq;
    for (int held : {1, 4}) {
      const ActivationMeasurement measured = measure_activations(m, c.batch, held);
      const int64_t estimate = estimated_activations(m, c.batch, held);
      const double mib = 1024.0 * 1024.0;
      const double ratio = static_cast<double>(estimate) / static_cast<double>(measured.peak_bytes);
      std::printf("| %s | %d | %.1f | %.1f | %.1f | %.3f |\n", c.name, held, measured.saved_bytes / mib,
                  measured.peak_bytes / mib, estimate / mib, ratio);
      char row[256];
      std::snprintf(row, sizeof(row), "%s,%d,%lld,%lld,%lld,%.4f\n", c.name, held, static_cast<long long>(measured.saved_bytes),
                    static_cast<long long>(measured.peak_bytes), static_cast<long long>(estimate), ratio);
      csv += row;
    }
  }
  if (args.count("csv")) std::ofstream(args["csv"].as<std::string>()) << csv;
  return 0;
}
