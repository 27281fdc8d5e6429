// stages/kernels/cpu_adamw.h without LibTorch: every element type the kernel reads and writes, sizes
// on both sides of its chunks, threads, against AdamW's formula evaluated in double here. CI runs
// this suite under AddressSanitizer (scripts/sanitize.sh asan): the kernel's vector clones, chunk
// buffers and 16-bit conversions are the raw-pointer code of the optimizer.
// (tests/test_cpu_adamw.cpp checks the same kernel against LibTorch's AdamW bit for bit.)
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <tuple>
#include <vector>

#include "stages/kernels/cpu_adamw.h"

using namespace pipetrain;

namespace {

float bits_to_float(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

float bf16_value(uint16_t h) { return bits_to_float(static_cast<uint32_t>(h) << 16); }

// IEEE half to float, written out (normals, subnormals, zero; the tests make no inf or NaN).
float f16_value(uint16_t h) {
  const int exponent = (h >> 10) & 0x1f;
  const int mantissa = h & 0x3ff;
  const float magnitude = exponent == 0 ? std::ldexp(static_cast<float>(mantissa), -24)
                                        : std::ldexp(static_cast<float>(mantissa | 0x400), exponent - 25);
  return (h & 0x8000) ? -magnitude : magnitude;
}

// The nearer of two 16-bit candidates to x; a tie goes to the even one (round to nearest even).
uint16_t nearer(uint16_t a, uint16_t b, float x, float (*value)(uint16_t)) {
  const float da = std::fabs(value(a) - x), db = std::fabs(value(b) - x);
  if (da != db) return da < db ? a : b;
  return (a & 1) == 0 ? a : b;
}

// A 16-bit array holding `values` rounded to nearest even, found by comparing the neighbours
// (plain, slow, and independent of the kernel's bit tricks).
std::vector<uint16_t> narrow(const std::vector<float>& values, Elem type) {
  std::vector<uint16_t> out(values.size());
  // float16: every finite non-negative value in order of magnitude is in order of its bits.
  std::vector<float> f16_magnitudes(0x7c00);
  for (uint32_t h = 0; h < 0x7c00; ++h) f16_magnitudes[h] = f16_value(static_cast<uint16_t>(h));
  for (size_t i = 0; i < values.size(); ++i) {
    const float x = values[i];
    if (type == Elem::kBF16) {
      uint32_t bits;
      std::memcpy(&bits, &x, sizeof bits);
      const auto down = static_cast<uint16_t>(bits >> 16);  // toward zero
      out[i] = nearer(down, static_cast<uint16_t>(down + 1), x, bf16_value);
    } else {
      const auto above = std::lower_bound(f16_magnitudes.begin(), f16_magnitudes.end(), std::fabs(x)) - f16_magnitudes.begin();
      const uint16_t sign = x < 0 ? 0x8000 : 0;
      const auto hi = static_cast<uint16_t>(std::min<long>(above, 0x7bff) | sign);
      const auto lo = static_cast<uint16_t>(std::max<long>(above - 1, 0) | sign);
      out[i] = nearer(lo, hi, x, f16_value);
    }
  }
  return out;
}

std::vector<float> random_values(size_t n, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::uniform_int_distribution<int> magnitude(-6, 0);
  std::vector<float> v(n);
  for (auto& x : v) x = normal(rng) * std::pow(10.0f, static_cast<float>(magnitude(rng)));
  return v;
}

// AdamW's formula in double: decoupled decay, moments, bias correction, eps outside the root.
struct Reference {
  std::vector<double> w, m, v;
  void step(const AdamWHyper& h, int64_t t, const std::vector<float>& g, double scale) {
    const double c1 = 1.0 - std::pow(h.beta1, static_cast<double>(t));
    const double c2 = 1.0 - std::pow(h.beta2, static_cast<double>(t));
    for (size_t i = 0; i < w.size(); ++i) {
      const double gi = g[i] * scale;
      w[i] *= 1.0 - h.lr * h.weight_decay;
      m[i] = h.beta1 * m[i] + (1.0 - h.beta1) * gi;
      v[i] = h.beta2 * v[i] + (1.0 - h.beta2) * gi * gi;
      w[i] -= h.lr * (m[i] / c1) / (std::sqrt(v[i] / c2) + h.eps);
    }
  }
};

// Largest |a - b| over the largest |b|.
double relative_difference(const std::vector<float>& a, const std::vector<double>& b) {
  double worst = 0.0, scale = 1e-30;
  for (size_t i = 0; i < b.size(); ++i) {
    worst = std::max(worst, std::fabs(a[i] - b[i]));
    scale = std::max(scale, std::fabs(b[i]));
  }
  return worst / scale;
}

const AdamWHyper kHyper{3e-3, 0.9, 0.95, 1e-8, 0.1};

}  // namespace

// float32 throughout: within 1e-6 of the formula in double (float32 rounding), for sizes below, at
// and past the 2048-element chunks, one thread and three.
TEST_CASE("float32 AdamW follows the formula across chunk edges and threads") {
  for (int64_t n : {int64_t{1}, int64_t{15}, int64_t{2047}, int64_t{2048}, int64_t{2049}, int64_t{3 * 2048 + 5}, int64_t{40001}}) {
    for (int threads : {1, 3}) {
      CAPTURE(n);
      CAPTURE(threads);
      std::vector<float> w = random_values(static_cast<size_t>(n), 1, 0.02f), m(w.size(), 0.0f), v(w.size(), 0.0f);
      Reference ref{{w.begin(), w.end()}, std::vector<double>(w.size(), 0.0), std::vector<double>(w.size(), 0.0)};
      for (int64_t t = 1; t <= 4; ++t) {
        const std::vector<float> g = random_values(w.size(), static_cast<uint32_t>(10 + t), 1.0f);
        cpu_adamw_step(kHyper, t, 1.0f, {w.data(), m.data(), v.data(), g.data(), nullptr, n, Elem::kF32, Elem::kF32, Elem::kF32},
                       threads);
        ref.step(kHyper, t, g, 1.0);
      }
      CHECK(relative_difference(w, ref.w) <= 1e-6);
      CHECK(relative_difference(m, ref.m) <= 1e-6);
      CHECK(relative_difference(v, ref.v) <= 1e-6);
    }
  }
}

// Chunks are independent, so threads change no bit; the gradient scale multiplies as it reads.
TEST_CASE("threads change no bit, and the gradient scale scales") {
  const int64_t n = 5 * 2048 + 17;
  const std::vector<float> start = random_values(static_cast<size_t>(n), 2, 1.0f);
  const std::vector<float> g = random_values(static_cast<size_t>(n), 3, 1.0f);
  std::vector<float> doubled_values(g);
  for (auto& x : doubled_values) x *= 2.0f;
  const std::vector<float>& doubled = doubled_values;
  std::vector<std::vector<float>> results;
  for (const auto& [threads, grad, scale] : {std::tuple{1, &g, 1.0f}, std::tuple{4, &g, 1.0f}, std::tuple{2, &doubled, 0.5f}}) {
    std::vector<float> w(start), m(start.size(), 0.0f), v(start.size(), 0.0f);
    cpu_adamw_step(kHyper, 1, scale, {w.data(), m.data(), v.data(), grad->data(), nullptr, n, Elem::kF32, Elem::kF32, Elem::kF32},
                   threads);
    results.push_back(w);
  }
  CHECK(results[0] == results[1]);
  CHECK(results[0] == results[2]);
}

// bfloat16 moments: stored rounded after every step, so each step's update moves by about 1% of lr
// at most against float32 moments; 16-bit gradients are read and 16-bit weights are written as the
// masters rounded to nearest, for both 16-bit types, across chunk edges.
TEST_CASE("16-bit moments, gradients and weights") {
  const int64_t n = 5 * 2048 + 3;  // six chunks: the threaded path
  const std::vector<float> start = random_values(static_cast<size_t>(n), 4, 1.0f);
  std::vector<float> wide(start), m(start.size(), 0.0f), v(start.size(), 0.0f);
  std::vector<float> narrow_master(start);
  std::vector<uint16_t> m16(start.size(), 0), v16(start.size(), 0);
  for (int64_t t = 1; t <= 3; ++t) {
    const std::vector<float> g = random_values(start.size(), static_cast<uint32_t>(20 + t), 1.0f);
    cpu_adamw_step(kHyper, t, 1.0f, {wide.data(), m.data(), v.data(), g.data(), nullptr, n, Elem::kF32, Elem::kF32, Elem::kF32}, 2);
    cpu_adamw_step(kHyper, t, 1.0f,
                   {narrow_master.data(), m16.data(), v16.data(), g.data(), nullptr, n, Elem::kBF16, Elem::kF32, Elem::kF32}, 2);
  }
  double worst = 0.0;
  for (int64_t i = 0; i < n; ++i) worst = std::max(worst, static_cast<double>(std::fabs(wide[i] - narrow_master[i])));
  CHECK_MESSAGE(worst <= 0.03 * kHyper.lr, "largest difference " << worst);
  CHECK(worst > 0.0);  // the moments really were narrowed

  for (Elem type : {Elem::kBF16, Elem::kF16}) {
    CAPTURE(static_cast<int>(type));
    std::vector<float> master(start), again(start);
    std::vector<float> m1(master.size(), 0.0f), v1(master.size(), 0.0f), m2(m1), v2(v1);
    const std::vector<uint16_t> grad16 = narrow(random_values(master.size(), 5, 1.0f), type);
    std::vector<float> grad_wide(master.size());
    for (size_t i = 0; i < grad16.size(); ++i) grad_wide[i] = type == Elem::kBF16 ? bf16_value(grad16[i]) : f16_value(grad16[i]);
    std::vector<uint16_t> weights(master.size(), 0xffff);
    cpu_adamw_step(kHyper, 1, 1.0f,
                   {master.data(), m1.data(), v1.data(), grad16.data(), weights.data(), n, Elem::kF32, type, type}, 3);
    cpu_adamw_step(kHyper, 1, 1.0f,
                   {again.data(), m2.data(), v2.data(), grad_wide.data(), nullptr, n, Elem::kF32, Elem::kF32, Elem::kF32}, 1);
    CHECK(master == again);            // a 16-bit gradient is its value widened
    CHECK(weights == narrow(master, type));  // the weights are the masters rounded to nearest
  }
}

// Bad element types are refused by name, not read past.
TEST_CASE("float16 moments are refused") {
  std::vector<float> w(8, 1.0f), g(8, 1.0f);
  std::vector<uint16_t> m(8, 0), v(8, 0);
  CHECK_THROWS(cpu_adamw_step(kHyper, 1, 1.0f, {w.data(), m.data(), v.data(), g.data(), nullptr, 8, Elem::kF16, Elem::kF32, Elem::kF32}, 1));
}
