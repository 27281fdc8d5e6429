// The fused CPU AdamW (stages/kernels/cpu_adamw.h) against LibTorch's AdamW on the same cores, and
// against this machine's memory bandwidth (a STREAM triad, runtime/backends/cpu/memory_bandwidth.h).
//
// Per thread count: one step over --params float32 parameters, median of --repeats steps after a
// warm-up, for LibTorch's AdamW (its intra-op pool set to the threads, its temporaries from the
// caching allocator training uses), the fused kernel with
// float32 moments stepping the parameters in place, with bfloat16 moments, and as a mixed-precision
// stage runs it (float32 masters, bfloat16 gradients read, bfloat16 weights written). The fused
// kernel's bytes per parameter (what it must read and write once) over its time is its bandwidth;
// over the triad's, the fraction of the bound it reaches.
//
//   build/bench_cpu_adamw --params 16777216 --threads 1,2 --repeats 9 --json benchmarks/results/cpu_adamw.json
#include <ATen/Parallel.h>
#include <cxxopts.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>
#include <vector>

#include "runtime/backends/cpu/host_allocator.h"
#include "runtime/backends/cpu/memory_bandwidth.h"
#include "scheduler/statistics.h"
#include "stages/kernels/cpu_adamw.h"

using namespace pipetrain;
using Clock = std::chrono::steady_clock;

namespace {

double median_seconds(int repeats, const std::function<void()>& step) {
  step();  // warm-up: first touches
  std::vector<double> seconds;
  for (int r = 0; r < repeats; ++r) {
    const auto start = Clock::now();
    step();
    seconds.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }
  return median(seconds);
}

std::vector<int> parse_counts(const std::string& text) {
  std::vector<int> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(std::stoi(item));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  cxxopts::Options options("bench_cpu_adamw", "The fused CPU AdamW against LibTorch's AdamW and the memory bandwidth");
  options.add_options()("params", "parameters per step", cxxopts::value<int64_t>()->default_value("16777216"))(
      "threads", "thread counts, e.g. 1,2", cxxopts::value<std::string>()->default_value("1,2"))(
      "repeats", "measured steps per setting", cxxopts::value<int>()->default_value("9"))(
      "json", "write the results here", cxxopts::value<std::string>())("h,help", "show this help");
  const auto args = options.parse(argc, argv);
  if (args.count("help")) {
    std::printf("%s\n", options.help().c_str());
    return 0;
  }
  const int64_t n = args["params"].as<int64_t>();
  const int repeats = args["repeats"].as<int>();
  if (n < 1 || repeats < 1) {
    std::fprintf(stderr, "error: --params and --repeats must be positive, got %lld and %d\n", static_cast<long long>(n), repeats);
    return 2;
  }
  // LibTorch's tensors from pipetrain's caching allocator, as in training: LibTorch's AdamW makes
  // temporaries every step (sqrt(v), its quotient), and with glibc's malloc each one is mapped and
  // faulted in afresh (0.5-1.1 s per step of 16 Mi parameters here, against 0.03 s reused).
  HostCachingAllocator::install();
  torch::NoGradGuard no_grad;
  torch::manual_seed(1);
  const AdamWHyper hyper{1e-3, 0.9, 0.95, 1e-8, 0.01};
  // The bytes each variant must move once per parameter: master read and written (8), two moments
  // read and written (16 in float32, 8 in bfloat16), the gradient read, 16-bit weights written.
  struct Variant {
    const char* name;
    double bytes_per_param;
  };
  const Variant fp32{"fused, float32 moments, in place", 8.0 + 16.0 + 4.0};
  const Variant bf16_state{"fused, bfloat16 moments, in place", 8.0 + 8.0 + 4.0};
  const Variant mixed{"fused, float32 masters, bfloat16 grads and weights", 8.0 + 16.0 + 2.0 + 2.0};

  nlohmann::json results = nlohmann::json::array();
  std::printf("fused CPU AdamW (%s) over %lld parameters, median of %d steps\n", cpu_adamw_isa(), static_cast<long long>(n),
              repeats);
  std::printf("%-8s %-52s %10s %10s %9s %9s %9s\n", "threads", "variant", "ms/step", "GB/s", "of triad", "vs LibTorch",
              "of bound");
  // Every triad before any LibTorch work (memory_bandwidth.h: idle pool threads spin and take cores).
  const std::vector<int> thread_counts = parse_counts(args["threads"].as<std::string>());
  std::vector<double> triads;
  for (int threads : thread_counts) triads.push_back(measure_triad_bytes_per_s(threads, 1.0));
  for (size_t t = 0; t < thread_counts.size(); ++t) {
    const int threads = thread_counts[t];
    const double triad = triads[t];
    // LibTorch's AdamW on the same threads (its elementwise kernels use the intra-op pool).
    at::set_num_threads(threads);
    torch::Tensor p = torch::randn({n}).mul_(0.02).requires_grad_(true);
    p.mutable_grad() = torch::randn({n});
    torch::optim::AdamW library({p}, torch::optim::AdamWOptions(1e-3).betas({0.9, 0.95}).weight_decay(0.01));
    const double library_seconds = median_seconds(repeats, [&] {
      library.step();
      HostCachingAllocator::end_step();
    });
    std::printf("%-8d %-52s %10.2f %10s %9s %9s   (triad %.1f GB/s)\n", threads, "LibTorch AdamW", library_seconds * 1e3, "-", "-",
                "1.00", triad / 1e9);
    results.push_back({{"threads", threads}, {"variant", "LibTorch AdamW"}, {"seconds", library_seconds},
                       {"triad_bytes_per_s", triad}});

    torch::Tensor master = torch::randn({n}).mul_(0.02);
    const torch::Tensor grad = torch::randn({n});
    const torch::Tensor grad16 = grad.to(torch::kBFloat16);
    torch::Tensor m = torch::zeros({n}), v = torch::zeros({n});
    torch::Tensor m16 = torch::zeros({n}, torch::kBFloat16), v16 = torch::zeros({n}, torch::kBFloat16);
    torch::Tensor weights16 = torch::empty({n}, torch::kBFloat16);
    int64_t step = 0;
    const std::vector<std::pair<Variant, AdamWTensor>> variants = {
        {fp32, {master.data_ptr<float>(), m.data_ptr(), v.data_ptr(), grad.data_ptr(), nullptr, n, Elem::kF32, Elem::kF32, Elem::kF32}},
        {bf16_state, {master.data_ptr<float>(), m16.data_ptr(), v16.data_ptr(), grad.data_ptr(), nullptr, n, Elem::kBF16, Elem::kF32,
                      Elem::kF32}},
        {mixed, {master.data_ptr<float>(), m.data_ptr(), v.data_ptr(), grad16.data_ptr(), weights16.data_ptr(), n, Elem::kF32, Elem::kBF16,
                 Elem::kBF16}}};
    // The same bytes with no arithmetic (read p, m, v, g; write p, m, v, each once, split over the
    // threads as the kernel splits them): the bound this access pattern can reach here, which
    // the triad (two streams read, one written, STREAM's byte count) does not show.
    const double stream_seconds = median_seconds(repeats, [&] {
      float* pp = master.data_ptr<float>();
      float* pm = m.data_ptr<float>();
      float* pv = v.data_ptr<float>();
      const float* pg = grad.data_ptr<float>();
      std::vector<std::thread> workers;
      for (int t = 0; t < threads; ++t) {
        workers.emplace_back([=] {
          for (int64_t i = n * t / threads, end = n * (t + 1) / threads; i < end; ++i) {
            pp[i] += pg[i];
            pm[i] += pg[i];
            pv[i] += pg[i];
          }
        });
      }
      for (std::thread& w : workers) w.join();
    });
    const double stream_bandwidth = fp32.bytes_per_param * static_cast<double>(n) / stream_seconds;
    std::printf("%-8d %-52s %10.2f %10.1f %8.0f%% %9s\n", threads, "(bound: the same bytes, no arithmetic)", stream_seconds * 1e3,
                stream_bandwidth / 1e9, 100.0 * stream_bandwidth / triad, "");
    results.push_back({{"threads", threads}, {"variant", "stream bound"}, {"seconds", stream_seconds},
                       {"bytes_per_param", fp32.bytes_per_param}, {"bytes_per_s", stream_bandwidth}});
    master.normal_().mul_(0.02);  // undo the bound's additions
    for (const auto& [variant, tensor] : variants) {
      const double seconds = median_seconds(repeats, [&] { cpu_adamw_step(hyper, ++step, 1.0f, tensor, threads); });
      const double bandwidth = variant.bytes_per_param * static_cast<double>(n) / seconds;
      std::printf("%-8d %-52s %10.2f %10.1f %8.0f%% %8.2fx %8.0f%%\n", threads, variant.name, seconds * 1e3, bandwidth / 1e9,
                  100.0 * bandwidth / triad, library_seconds / seconds, 100.0 * bandwidth / stream_bandwidth);
      results.push_back({{"threads", threads}, {"variant", variant.name}, {"seconds", seconds},
                         {"bytes_per_param", variant.bytes_per_param}, {"bytes_per_s", bandwidth},
                         {"fraction_of_triad", bandwidth / triad}, {"fraction_of_stream_bound", bandwidth / stream_bandwidth},
                         {"speedup_over_libtorch", library_seconds / seconds}});
    }
  }
  if (args.count("json")) {
    std::ofstream(args["json"].as<std::string>()) << nlohmann::json{{"params", n}, {"isa", cpu_adamw_isa()}, {"results", results}}.dump(2)
                                                 << "\n";
  }
  return 0;
}
