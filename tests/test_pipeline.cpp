// runtime/train/pipeline_trainer: pipelining is an execution strategy, never a change of the mathematics.
// Transparency: for 1..4 stages, M in {1, 4, 8}, GPipe and 1F1B, with and without activation
// checkpointing, k steps give the reference trainer's losses and parameters within 1e-5 relative.
#include <doctest/doctest.h>
#include <torch/torch.h>
#include <yaml-cpp/yaml.h>

#include <cmath>
#include <limits>

#include "memory/errors.h"
#include "memory/machine_probe.h"
#include "runtime/config/hardware_file.h"
#include "runtime/config/run_config.h"
#include "runtime/backends/registry.h"
#include "runtime/train/pipeline_trainer.h"
#include "runtime/train/run_plan.h"
#include "runtime/backends/cpu/threads.h"
#include "runtime/train/trainer.h"
#include "planner_fixtures.h"
#include "test_util.h"

using namespace pipetrain;

namespace {

constexpr double kRelativeTolerance = 1e-5;
constexpr int kSteps = 3;

// A model of 3 blocks: layers embed, 1, 2, 3, head (5 layers), on a few kilobytes of text.
RunConfig tiny_run(const std::string& data_file, int micro_batches, std::vector<std::string> more = {}) {
  std::vector<std::string> overrides = {"stages=none", "model.hidden_dim=32", "model.num_layers=3", "model.num_heads=2",
                                        "model.intermediate_size=64", "model.seq_len=16",
                                        "train.micro_batch_size=2", "train.steps=10", "train.eval_batches=2",
                                        "train.warmup_steps=1", "train.micro_batches=" + std::to_string(micro_batches)};
  overrides.insert(overrides.end(), more.begin(), more.end());
  RunConfig run = parse_run_config(default_config_text(), "default config", overrides);
  run.data.files = {data_file};
  return run;
}

HardwareSpec host(int cores) { return testing::cpu_only_box(cores); }

// S stages over the 5 layers, as even as layer counts allow; all on the CPU's shared pool (one core
// here, so each op computes with one thread like the reference: the comparison is of the mathematics,
// not of how a multithreaded reduction orders its sums).
StageMap split(int num_stages) {
  static const std::vector<std::vector<int64_t>> cuts = {{4}, {1, 4}, {1, 2, 4}, {0, 1, 2, 4}};
  return make_stage_map(std::vector<DeviceId>(static_cast<size_t>(num_stages), DeviceId::cpu()), cuts[num_stages - 1]);
}

struct Trajectory {
  std::vector<double> losses;
  std::vector<double> grad_norms;
  std::vector<torch::Tensor> params;
};

// One intra-op and one BLAS thread, as every pipeline below computes with: the same reduction order.
Trajectory run_reference(const RunConfig& run) {
  apply_threads(choose_threads(1, 1, 1));
  ReferenceTrainer trainer(run, torch::kCPU);
  Trajectory t;
  for (int i = 0; i < kSteps; ++i) {
    const StepRecord r = trainer.train_step();
    t.losses.push_back(r.loss);
    t.grad_norms.push_back(r.grad_norm);
  }
  for (const torch::Tensor& p : trainer.model()->parameters()) t.params.push_back(p.detach().clone());
  return t;
}

double relative_difference(const torch::Tensor& a, const torch::Tensor& b) {
  const double scale = std::max(b.abs().max().item<double>(), 1e-12);
  return (a - b).abs().max().item<double>() / scale;
}

}  // namespace

// The transparency matrix: every stage count, micro-batch count, schedule and checkpointing setting
// equals the reference trainer (same seed, same data order) after kSteps steps, within 1e-5.
TEST_CASE("pipelined training equals the reference trainer") {
  testing::ScratchDir dir;
  const std::string data = dir.file("text.txt", testing::sample_text(300));
  for (int m : {1, 4, 8}) {
    const Trajectory reference = run_reference(tiny_run(data, m));
    for (int s : {1, 2, 3, 4}) {
      for (ScheduleKind kind : {ScheduleKind::named("gpipe"), ScheduleKind::named("1f1b")}) {
        for (bool ckpt : {false, true}) {
          CAPTURE(m);
          CAPTURE(s);
          CAPTURE(kind.name());
          CAPTURE(ckpt);
          RunConfig run = tiny_run(data, m, {"train.schedule=" + kind.name(),
                                             std::string("train.checkpointing=") + (ckpt ? "true" : "false")});
          run.stages = split(s);
          PipelineTrainer trainer(run, plan_of_run(run, host(1)), host(1), /*keep_trace=*/false);
          for (int i = 0; i < kSteps; ++i) {
            const StepRecord r = trainer.train_step();
            CHECK(std::abs(r.loss - reference.losses[i]) <= kRelativeTolerance * std::abs(reference.losses[i]));
            CHECK(std::abs(r.grad_norm - reference.grad_norms[i]) <= kRelativeTolerance * reference.grad_norms[i]);
          }
          const std::vector<torch::Tensor> params = trainer.parameters();
          REQUIRE(params.size() == reference.params.size());
          double worst = 0.0;
          for (size_t i = 0; i < params.size(); ++i) {
            REQUIRE(params[i].sizes() == reference.params[i].sizes());
            worst = std::max(worst, relative_difference(params[i], reference.params[i]));
          }
          CHECK_MESSAGE(worst <= kRelativeTolerance, "largest relative parameter difference ", worst);
          // Micro-batches in flight are the schedule's: GPipe all M, 1F1B min(M, S - s).
          for (int st = 0; st < s; ++st) {
            const int expected = kind == ScheduleKind::named("gpipe") ? m : std::min(m, s - st);
            CHECK(trainer.last_max_in_flight()[st] == expected);
          }
        }
      }
    }
  }
}

// stage2 on the GPU (cpu -> cuda:0 -> cpu, pinned rings and copy streams between them) trains like
// the CPU reference: losses and grad norms within 1e-4 relative for GPipe and 1F1B, with and
// without checkpointing (GPU kernels sum in another order than the CPU's: 1e-4, not 1e-5).
// Parameters within 1e-3: AdamW divides each element's gradient by its own running magnitude, so
// an element whose gradient is nearly zero turns a rounding difference into a step of up to lr
// (measured on an H200: 1.7e-4 after 3 steps).
TEST_CASE("stage2 on cuda:0 equals the CPU reference") {
  if (!cuda_available()) {
    MESSAGE("skipped: no usable CUDA here (" << torch_build_description() << ")");
    return;
  }
  constexpr double kGpuTolerance = 1e-4;
  constexpr double kGpuParameterTolerance = 1e-3;
  testing::ScratchDir dir;
  const std::string data = dir.file("text.txt", testing::sample_text(300));
  const Trajectory reference = run_reference(tiny_run(data, 4));
  for (ScheduleKind kind : {ScheduleKind::named("gpipe"), ScheduleKind::named("1f1b")}) {
    for (bool ckpt : {false, true}) {
      CAPTURE(kind.name());
      CAPTURE(ckpt);
      RunConfig run = tiny_run(data, 4, {"train.schedule=" + kind.name(),
                                         std::string("train.checkpointing=") + (ckpt ? "true" : "false")});
      run.stages = make_stage_map({DeviceId::cpu(), DeviceId::cuda(0), DeviceId::cpu()}, {1, 3, 4});
      // One CPU core: the CPU stages compute with one thread, as the reference does.
      const HardwareSpec box = testing::cpu_gpu_box(16 * testing::kGiB, 4 * testing::kGiB, /*cores=*/1);
      PipelineTrainer trainer(run, plan_of_run(run, box), box, /*keep_trace=*/false);
      // Slots of one activation [2, 16, 32] in FP32: into the GPU 2 per boundary (ring_slots); out of
      // it, the receiving CPU stage's micro-batches in flight + 1 (GPipe: 4 each; 1F1B: 3 and 1).
      const int64_t slot = 2 * 16 * 32 * static_cast<int64_t>(sizeof(float));
      const int64_t out_slots = kind == ScheduleKind::named("gpipe") ? (4 + 1) + (4 + 1) : (3 + 1) + (1 + 1);
      CHECK(trainer.pinned_bytes() == (2 + 2 + out_slots) * slot);
      for (int i = 0; i < kSteps; ++i) {
        const StepRecord r = trainer.train_step();
        CHECK(std::abs(r.loss - reference.losses[i]) <= kGpuTolerance * std::abs(reference.losses[i]));
        CHECK(std::abs(r.grad_norm - reference.grad_norms[i]) <= kGpuTolerance * reference.grad_norms[i]);
      }
      const std::vector<torch::Tensor> params = trainer.parameters();
      REQUIRE(params.size() == reference.params.size());
      double worst = 0.0;
      for (size_t i = 0; i < params.size(); ++i) {
        worst = std::max(worst, relative_difference(params[i].cpu(), reference.params[i]));
      }
      MESSAGE("largest relative parameter difference against the CPU reference: " << worst);
      CHECK_MESSAGE(worst <= kGpuParameterTolerance, "largest relative parameter difference ", worst);
      // The GPU stage's spans come from CUDA events and lie inside the step's span.
      const PipelineSummary summary = trainer.summary();
      CHECK(summary.stage_busy[1] > 0.0);
      CHECK(summary.stage_busy[1] <= 1.0);
      const std::vector<VramLine> vram = trainer.vram();
      REQUIRE(vram.size() == 1);
      CHECK(vram[0].report.peak_allocated_bytes > 0);
      CHECK(vram[0].report.cap_bytes == 4 * testing::kGiB);
    }
  }
}

// Stages on cores of their own (one each, pinned) compute the same numbers as the shared pool.
TEST_CASE("stages on their own cores equal the reference too") {
  testing::ScratchDir dir;
  const std::string data = dir.file("text.txt", testing::sample_text(300));
  const Trajectory reference = run_reference(tiny_run(data, 4));
  RunConfig run = tiny_run(data, 4);
  run.stages = make_stage_map({DeviceId::cpu(), DeviceId::cpu()}, {2, 4}, {1, 1});
  PipelineTrainer trainer(run, plan_of_run(run, host(2)), host(2), false);
  CHECK(describe_cores(trainer.cores()) == "stage 0 owns core 0; stage 1 owns core 1; OpenBLAS 1 thread");
  for (int i = 0; i < kSteps; ++i) {
    const StepRecord r = trainer.train_step();
    CHECK(r.loss == doctest::Approx(reference.losses[i]).epsilon(kRelativeTolerance));
  }
  const std::vector<torch::Tensor> params = trainer.parameters();
  for (size_t i = 0; i < params.size(); ++i) CHECK(relative_difference(params[i], reference.params[i]) <= kRelativeTolerance);
}

// Validation through the stages gives the reference model's validation loss.
TEST_CASE("validation loss through the stages equals the reference") {
  testing::ScratchDir dir;
  const std::string data = dir.file("text.txt", testing::sample_text(300));
  RunConfig run = tiny_run(data, 2);
  ReferenceTrainer reference(run, torch::kCPU);
  run.stages = split(3);
  PipelineTrainer pipeline(run, plan_of_run(run, host(1)), host(1), false);
  reference.train_step();
  pipeline.train_step();
  CHECK(pipeline.validation_loss() == doctest::Approx(reference.validation_loss()).epsilon(kRelativeTolerance));
}

// A NaN loss in the last stage stops the step with one error naming the stage, the op and the
// micro-batch; no optimizer steps (every parameter is as it was), and no micro-batch stays stashed.
TEST_CASE("a failing stage cancels the step without a partial optimizer step") {
  testing::ScratchDir dir;
  const std::string data = dir.file("text.txt", testing::sample_text(300));
  for (ScheduleKind kind : {ScheduleKind::named("gpipe"), ScheduleKind::named("1f1b")}) {
    CAPTURE(kind.name());
    RunConfig run = tiny_run(data, 4, {"train.schedule=" + kind.name()});
    run.stages = split(3);
    PipelineTrainer trainer(run, plan_of_run(run, host(1)), host(1), false);
    trainer.train_step();
    {
      torch::NoGradGuard no_grad;
      trainer.stage(2).parameters().back().fill_(std::numeric_limits<float>::quiet_NaN());
    }
    std::vector<torch::Tensor> before;
    for (const torch::Tensor& p : trainer.parameters()) before.push_back(p.detach().clone());
    CHECK_THROWS_WITH_AS(trainer.train_step(),
                         doctest::Contains("stage 2 (cpu, block 2..head) failed in forward of micro-batch 0 at step 2: loss is nan"),
                         PipelineError);
    const std::vector<torch::Tensor> after = trainer.parameters();
    for (size_t i = 0; i + 1 < after.size(); ++i) CHECK(torch::equal(after[i], before[i]));
    for (int s = 0; s < 3; ++s) CHECK(trainer.stage(s).in_flight() == 0);
    CHECK(trainer.steps_done() == 1);
  }
}

// GPU stages on a machine or build without CUDA: refused, or with the explicit flag run on the CPU.
TEST_CASE("a cuda stage without CUDA is refused unless asked to run on the CPU") {
  if (cuda_available()) return;  // this check is about machines without a GPU
  const StageMap map = make_stage_map({DeviceId::cpu(), DeviceId::cuda(0), DeviceId::cpu()}, {1, 3, 4});
  CHECK_THROWS_WITH_AS(place_stages(map, false, nullptr),
                       doctest::Contains("stage 1 is placed on cuda:0, but this pipetrain has no usable CUDA"), InputError);
  std::vector<std::string> warnings;
  const StageMap placed = place_stages(map, true, &warnings);
  CHECK(placed.stages[1].device == DeviceId::cpu());
  REQUIRE(warnings.size() == 1);
  CHECK(warnings[0].find("--gpu-stages-on-cpu") != std::string::npos);
  // A device that is neither cpu nor cuda:N never reaches placement: the stage map's parser refuses it.
  const YAML::Node tpu = YAML::Load("[{device: cpu, layers: [embed, 0]}, {device: 'tpu:0', layers: [1, head]}]");
  CHECK_THROWS_WITH_AS(parse_stage_map(tpu, tiny_run("unused", 1).model, "map.yaml"),
                       doctest::Contains("map.yaml: stages[1].device: 'tpu:0' is not a device"), InputError);
}
