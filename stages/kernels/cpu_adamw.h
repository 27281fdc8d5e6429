// AdamW on the CPU in one pass: each element's float32 master weight, two moments and gradient are
// read once, and its master, moments and (when the layer computes apart from its master) weight
// written once. LibTorch 1.13's AdamW makes about nine passes over memory for the same step; an
// optimizer step is memory-bound, so one pass is most of the win (benchmarks/bench_cpu_adamw.cpp).
//
// The arithmetic is LibTorch's AdamW (torch/csrc/api/src/optim/adamw.cpp), element by element and
// in float32: decay the weight, update the moments, divide by the bias-corrected root of the second
// moment plus eps, step. tests/test_cpu_adamw.cpp checks it against LibTorch's AdamW.
//
// Work is cut into chunks of kChunk elements (cache-resident): a 16-bit gradient is widened into a
// float buffer, the update runs on floats (bfloat16 moments widened and narrowed in its loop), and
// 16-bit weights are narrowed from the masters, each a simple loop the compiler vectorises; the functions are compiled for AVX-512, AVX2 and the
// baseline and the best the processor has is chosen at load time (GCC target_clones). Chunks run
// in parallel on `threads` threads (oneTBB).
//
//   AdamWHyper h{lr, 0.9, 0.95, 1e-8, 0.01};
//   cpu_adamw_step(h, /*step=*/1, /*grad_scale=*/1.0f, {master, exp_avg, exp_avg_sq, grad, nullptr, n,
//                  Elem::kF32, Elem::kF32, Elem::kF32}, /*threads=*/4);
#pragma once

#include <cstdint>

namespace pipetrain {

// The element types the kernel reads and writes.
enum class Elem : uint8_t { kF32, kBF16, kF16 };
int elem_bytes(Elem elem);

struct AdamWHyper {
  double lr;
  double beta1;
  double beta2;
  double eps;
  double weight_decay;  // decoupled: the weight is multiplied by 1 - lr * weight_decay first
};

// One tensor's arrays, `n` elements each.
struct AdamWTensor {
  float* master;         // float32 master weights, updated in place
  void* exp_avg;         // first moment, in `moments`
  void* exp_avg_sq;      // second moment, in `moments`
  const void* grad;      // the gradient, in `grad_type`
  void* weights;         // the weights a layer computes with, rewritten from the master, or nullptr
                         // when the master is the weights themselves
  int64_t n;
  Elem moments;
  Elem grad_type;
  Elem weight_type;
};

// One AdamW step (the step count after this step: 1 for the first) over one tensor. The gradient
// is multiplied by `grad_scale` as it is read (global-norm clipping, a loss scale undone).
void cpu_adamw_step(const AdamWHyper& hyper, int64_t step, float grad_scale, const AdamWTensor& tensor, int threads);

// What the processor runs the kernel with: "AVX-512", "AVX2" or "baseline x86-64".
const char* cpu_adamw_isa();

}  // namespace pipetrain
