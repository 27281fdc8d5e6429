#include "runtime/backends/cpu/memory_bandwidth.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "runtime/backends/cpu/core_pinning.h"

namespace pipetrain {

double measure_triad_bytes_per_s(int threads, double seconds, int64_t elements) {
  threads = std::max(1, threads);
  // Each thread owns its slice of the arrays and first touches it, so its pages sit near its core.
  std::unique_ptr<float[]> a(new float[static_cast<size_t>(elements)]);
  std::unique_ptr<float[]> b(new float[static_cast<size_t>(elements)]);
  std::unique_ptr<float[]> c(new float[static_cast<size_t>(elements)]);
  auto run_pass = [&](bool initialise) {
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        PinToCores pin({t});
        const int64_t begin = elements * t / threads, end = elements * (t + 1) / threads;
        float* pa = a.get();
        const float* pb = b.get();
        const float* pc = c.get();
        if (initialise) {
          for (int64_t i = begin; i < end; ++i) {
            a[static_cast<size_t>(i)] = 0.0f;
            b[static_cast<size_t>(i)] = 1.0f;
            c[static_cast<size_t>(i)] = 2.0f;
          }
          return;
        }
        const float s = 3.0f;
        for (int64_t i = begin; i < end; ++i) pa[i] = pb[i] + s * pc[i];
      });
    }
    for (std::thread& w : workers) w.join();
  };
  run_pass(true);
  std::vector<double> rates;
  const auto start = std::chrono::steady_clock::now();
  while (rates.size() < 3 || std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < seconds) {
    const auto t0 = std::chrono::steady_clock::now();
    run_pass(false);
    const double pass = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    rates.push_back(3.0 * sizeof(float) * static_cast<double>(elements) / pass);
    if (rates.size() >= 50) break;
  }
  std::sort(rates.begin(), rates.end());
  return rates[rates.size() / 2];
}

}  // namespace pipetrain
