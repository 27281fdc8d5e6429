// The planner's memory estimate against bytes counted by an instrumented CPU allocator: activations
// within 15% of the measured peak (the planner issue's tolerance), for one and several micro-batches
// held. benchmarks/bench_activation_memory prints the same comparison for larger configs.
#include <doctest/doctest.h>
#include <torch/torch.h>

#include "memory/estimate.h"
#include "memory/precision.h"
#include "runtime/backends/cpu/cpu_alloc_counter.h"
#include "runtime/tools/activation_probe.h"
#include "stages/stage.h"

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

// Estimated activation bytes are within 15% of the measured peak for several shapes, in float32,
// bfloat16 and float64 (the model built and run in that dtype).
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
    for (const Dtype dtype : {Dtype::kFloat32, Dtype::kBFloat16, Dtype::kFloat64}) {
      m.dtype = dtype;
      for (int held : {1, 3}) {
        const ActivationMeasurement measured = measure_activations(m, s.batch, held);
        const double ratio =
            static_cast<double>(estimated_activations(m, s.batch, held)) / static_cast<double>(measured.peak_bytes);
        CHECK_MESSAGE(ratio == doctest::Approx(1.0).epsilon(0.15), dtype_name(dtype) << " h" << s.hidden << " L" << s.layers
                                                                                     << " T" << s.seq << " held " << held
                                                                                     << ": estimate/peak = " << ratio);
      }
    }
  }
}

// What the estimate counts of a stage's training state (weights, gradients, float32 masters, the
// optimizer's state) is what the stage allocates after its first step, byte for byte, in float32
// (fused AdamW in place), bfloat16 (float32 masters, fused AdamW on them) and float64 (LibTorch's
// AdamW in place, its moments in float64), and with bfloat16 moments.
TEST_CASE("training state by dtype equals counted allocations") {
  CpuAllocCounter::install();
  ModelConfig m;
  m.hidden_dim = 64;
  m.num_layers = 2;
  m.num_heads = 4;
  m.intermediate_size = 256;
  m.seq_len = 16;
  HardwareSpec hw;
  hw.name = "counted";
  DeviceSpec cpu;
  cpu.id = DeviceId::cpu();
  cpu.allocator_slack = 0.0;
  cpu.flops_per_s = 1e9;
  cpu.memory_bytes_per_s = 1e9;
  for (const auto& [compute, moments] : {std::pair{Dtype::kFloat32, Dtype::kFloat32}, std::pair{Dtype::kBFloat16, Dtype::kFloat32},
                                         std::pair{Dtype::kFloat64, Dtype::kFloat32}, std::pair{Dtype::kFloat32, Dtype::kBFloat16}}) {
    CAPTURE(dtype_name(compute));
    CAPTURE(dtype_name(moments));
    MemoryOptions options;
    options.precision = uniform_precision(compute);
    options.optimizer.state_dtype = moments;
    const StageMemory planned = estimate_stage(LayerPrefix(describe_model(with_dtype(m, compute))).range(kEmbedLayer, head_layer(m)),
                                               m, cpu, cpu, /*streamed=*/false, /*in_flight=*/0, /*ring_bytes=*/0, options);
    const int64_t before = CpuAllocCounter::current_bytes();
    {
      StageOptions stage_options;
      stage_options.compute = compute;
      stage_options.optimizer = options.optimizer;
      Stage stage(m, kEmbedLayer, head_layer(m), /*seed=*/3, stage_options);
      torch::NoGradGuard no_grad;
      for (torch::Tensor& p : stage.parameters()) p.mutable_grad() = torch::zeros_like(p);
      stage.step(1e-3, 1.0);
      const int64_t counted = CpuAllocCounter::current_bytes() - before;
      const int64_t estimated = planned.weights + planned.grads + planned.master + planned.optimizer;
      CHECK_MESSAGE(counted == estimated, "counted " << counted << " bytes, estimated " << estimated << " ("
                                                     << stage.optimizer().describe() << ")");
    }
  }
}
