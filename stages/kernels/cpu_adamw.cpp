#include "stages/kernels/cpu_adamw.h"

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/info.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/task_arena.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

// Each loop below is compiled three times, for AVX-512 (x86-64-v4), AVX2 + FMA + F16C (x86-64-v3)
// and the baseline, and the processor picks at load time. Built with -fno-math-errno (CMake), so
// sqrt vectorises; with -ffp-contract=off GCC fuses no a * b + c by itself: update() says where
// it uses a fused multiply-add, as LibTorch does.
#define PIPETRAIN_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))

namespace pipetrain {

int elem_bytes(Elem elem) { return elem == Elem::kF32 ? 4 : 2; }

namespace cpu_adamw_detail {

constexpr int64_t kChunk = 2048;  // floats per chunk: 8 KiB per buffer, five buffers in L1/L2

// bfloat16 is float32's upper half; narrowing rounds to nearest even, as c10::BFloat16 does.
inline float bf16_to_float(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

inline uint16_t float_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  if (f != f) return 0x7FC0;  // NaN stays NaN
  return static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

PIPETRAIN_CLONES void widen(const void* src, Elem type, float* dst, int64_t n) {
  switch (type) {
    case Elem::kF32: {
      const float* s = static_cast<const float*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = s[i];
      return;
    }
    case Elem::kBF16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_float(s[i]);
      return;
    }
    case Elem::kF16: {
      const _Float16* s = static_cast<const _Float16*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(s[i]);
      return;
    }
  }
}

PIPETRAIN_CLONES void narrow(const float* src, void* dst, Elem type, int64_t n) {
  switch (type) {
    case Elem::kF32: {
      float* d = static_cast<float*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = src[i];
      return;
    }
    case Elem::kBF16: {
      uint16_t* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = float_to_bf16(src[i]);
      return;
    }
    case Elem::kF16: {
      _Float16* d = static_cast<_Float16*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = static_cast<_Float16>(src[i]);
      return;
    }
  }
}

// The step's constants, in float as LibTorch's kernels use them on float32 tensors.
struct Coefficients {
  float grad_scale;
  float decay;           // 1 - lr * weight_decay (1: none)
  float beta1, one_minus_beta1;
  float beta2, one_minus_beta2;
  float sqrt_bias_correction2;
  float eps;
  float neg_step_size;   // -lr / (1 - beta1^step)
};

// LibTorch's AdamW per element, in its operations' order and roundings, so that float32 results
// equal LibTorch 1.13's bit for bit (tests/test_cpu_adamw.cpp): p *= decay; m = m b1, then
// m + (1-b1) g as one fused multiply-add (ATen's vectorised add with alpha); v = v b2, then
// v + ((1-b2) g) g, fused too (as ATen's addcmul compiles); p += (-step_size m) / (sqrt(v) / sqrt(bc2) + eps)
// (addcdiv's order: the product first). std::fma is one instruction in the AVX2 and AVX-512 clones.
PIPETRAIN_CLONES void update(float* __restrict p, float* __restrict m, float* __restrict v, const float* __restrict g,
                             int64_t n, Coefficients c) {
  for (int64_t i = 0; i < n; ++i) {
    const float grad = g[i] * c.grad_scale;
    const float weight = p[i] * c.decay;
    const float first = std::fma(grad, c.one_minus_beta1, m[i] * c.beta1);
    const float second = std::fma(c.one_minus_beta2 * grad, grad, v[i] * c.beta2);
    const float denom = std::sqrt(second) / c.sqrt_bias_correction2 + c.eps;
    m[i] = first;
    v[i] = second;
    p[i] = weight + c.neg_step_size * first / denom;
  }
}

// The same with bfloat16 moments, widened and narrowed in the loop itself (a separate pass each way
// over a chunk buffer cost half the bandwidth: benchmarks/README.md).
PIPETRAIN_CLONES void update_bf16_moments(float* __restrict p, uint16_t* __restrict m, uint16_t* __restrict v,
                                          const float* __restrict g, int64_t n, Coefficients c) {
  for (int64_t i = 0; i < n; ++i) {
    const float grad = g[i] * c.grad_scale;
    const float weight = p[i] * c.decay;
    const float first = std::fma(grad, c.one_minus_beta1, bf16_to_float(m[i]) * c.beta1);
    const float second = std::fma(c.one_minus_beta2 * grad, grad, bf16_to_float(v[i]) * c.beta2);
    const float denom = std::sqrt(second) / c.sqrt_bias_correction2 + c.eps;
    m[i] = float_to_bf16(first);
    v[i] = float_to_bf16(second);
    p[i] = weight + c.neg_step_size * first / denom;
  }
}

}  // namespace cpu_adamw_detail

// What the clones' dispatcher picks: the first of the levels this processor supports.
const char* cpu_adamw_isa() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("x86-64-v4")) return "AVX-512 (x86-64-v4)";
  if (__builtin_cpu_supports("x86-64-v3")) return "AVX2 (x86-64-v3)";
  return "baseline x86-64";
}

void cpu_adamw_step(const AdamWHyper& h, int64_t step, float grad_scale, const AdamWTensor& t, int threads) {
  using namespace cpu_adamw_detail;
  if (step < 1) throw std::invalid_argument("cpu_adamw_step: step counts from 1, got " + std::to_string(step));
  if (t.moments == Elem::kF16) throw std::invalid_argument("cpu_adamw_step: moments are float32 or bfloat16, not float16");
  Coefficients c;
  c.grad_scale = grad_scale;
  c.decay = h.weight_decay != 0.0 ? static_cast<float>(1.0 - h.lr * h.weight_decay) : 1.0f;
  c.beta1 = static_cast<float>(h.beta1);
  c.one_minus_beta1 = static_cast<float>(1.0 - h.beta1);
  c.beta2 = static_cast<float>(h.beta2);
  c.one_minus_beta2 = static_cast<float>(1.0 - h.beta2);
  const double bias_correction1 = 1.0 - std::pow(h.beta1, static_cast<double>(step));
  const double bias_correction2 = 1.0 - std::pow(h.beta2, static_cast<double>(step));
  c.sqrt_bias_correction2 = static_cast<float>(std::sqrt(bias_correction2));
  c.eps = static_cast<float>(h.eps);
  c.neg_step_size = static_cast<float>(-(h.lr / bias_correction1));

  const bool f32_moments = t.moments == Elem::kF32;
  auto run = [&](int64_t begin, int64_t end) {
    alignas(64) float grad[kChunk];
    for (int64_t at = begin; at < end; at += kChunk) {
      const int64_t n = std::min(kChunk, end - at);
      const int64_t moment_offset = at * elem_bytes(t.moments);
      char* m_bytes = static_cast<char*>(t.exp_avg) + moment_offset;
      char* v_bytes = static_cast<char*>(t.exp_avg_sq) + moment_offset;
      // A float32 gradient is read where it is; a 16-bit one through the chunk buffer.
      const float* g = reinterpret_cast<const float*>(static_cast<const char*>(t.grad) + at * elem_bytes(t.grad_type));
      if (t.grad_type != Elem::kF32) {
        widen(g, t.grad_type, grad, n);
        g = grad;
      }
      if (f32_moments) {
        update(t.master + at, reinterpret_cast<float*>(m_bytes), reinterpret_cast<float*>(v_bytes), g, n, c);
      } else {
        update_bf16_moments(t.master + at, reinterpret_cast<uint16_t*>(m_bytes), reinterpret_cast<uint16_t*>(v_bytes), g, n, c);
      }
      if (t.weights != nullptr) {
        narrow(t.master + at, static_cast<char*>(t.weights) + at * elem_bytes(t.weight_type), t.weight_type, n);
      }
    }
  };
  // Threads take whole chunks; a tensor of a few chunks is not worth waking them.
  const int64_t chunks = (t.n + kChunk - 1) / kChunk;
  if (threads <= 1 || chunks < 4) {
    run(0, t.n);
    return;
  }
  // No more threads than the machine has (oneTBB would only warn) or than there are chunks.
  threads = std::min({threads, oneapi::tbb::info::default_concurrency(), static_cast<int>(chunks)});
  oneapi::tbb::task_arena arena(threads);
  arena.execute([&] {
    oneapi::tbb::parallel_for(oneapi::tbb::blocked_range<int64_t>(0, chunks, 4),
                              [&](const oneapi::tbb::blocked_range<int64_t>& r) {
                                run(r.begin() * kChunk, std::min(t.n, r.end() * kChunk));
                              });
  });
}

}  // namespace pipetrain
