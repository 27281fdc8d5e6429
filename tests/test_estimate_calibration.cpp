// The planner's activation estimate against bytes counted by an instrumented CPU allocator:
// within 15% of the measured peak (the planner issue's tolerance), for one and several micro-batches
// held. benchmarks/bench_activation_memory prints the same comparison for larger configs.
#include <doctest/doctest.h>
#include <torch/torch.h>

#include "runtime/tools/activation_probe.h"
#include "runtime/backends/cpu/cpu_alloc_counter.h"

using namespace pipetrain;

// The counting allocator sees a tensor's bytes while it lives and not after.
TEST_CASE("the counting allocator counts tensor storage") {
  CpuAllocCounter::install();
  const int64_t before = CpuAllocCounter::current_bytes();
  {
    const torch::Tensor t = torch::empty({1000}, torch::kFloat32);
    CHECK(CpuAllocCounter::current_bytes() - before == 4000);
    CHECK(CpuAllocCounter::peak_bytes() >= CpuAllocCounter::current_bytes());
  }
  CHECK(CpuAllocCounter::current_bytes() == before);
}

// Estimated activation bytes are within 15% of the measured peak for several shapes.
TEST_CASE("activation estimate within 15% of counted allocations") {
  struct Shape {
    int64_t hidden, layers, heads, inter, seq, batch;
  };
  for (const Shape& s : {Shape{64, 2, 4, 256, 32, 4}, Shape{128, 3, 8, 256, 64, 2}, Shape{96, 1, 2, 512, 16, 8}}) {
    ModelConfig m;
    m.hidden_dim = s.hidden;
    m.num_layers = s.layers;
    m.num_heads = s.heads;
    m.intermediate_size = s.inter;
    m.seq_len = s.seq;
    for (int held : {1, 3}) {
      const ActivationMeasurement measured = measure_activations(m, s.batch, held);
      const double ratio = static_cast<double>(estimated_activations(m, s.batch, held)) / static_cast<double>(measured.peak_bytes);
      CHECK_MESSAGE(ratio == doctest::Approx(1.0).epsilon(0.15),
                    "h" << s.hidden << " L" << s.layers << " T" << s.seq << " held " << held << ": estimate/peak = " << ratio);
    }
  }
}
