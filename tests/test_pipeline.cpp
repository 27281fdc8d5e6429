// runtime/train/pipeline_trainer: pipelining is an execution strategy, never a change of the mathematics.
// Transparency: for 1..4 stages, M in {1, 4, 8}, GPipe and 1F1B, with and without activation
// checkpointing, k steps give the reference trainer's losses and parameters within 1e-5 relative.
#include <doctest/doctest.h>
#include <torch/torch.h>
#include <yaml-cpp/yaml.h>

#include <sys/stat.h>

#include <cmath>
#include <memory>
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
  std::vector<std::string> overrides = {"stages=none", "data.tokenizer=bytes", "model.hidden_dim=32", "model.num_layers=3", "model.num_heads=2",
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

// kSteps steps of `trainer`, each step's loss and gradient norm checked against the reference's
// (kRelativeTolerance); returns the largest relative difference of the parameters after them.
double follow_reference(PipelineTrainer& trainer, const Trajectory& reference) {
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
  return worst;
}

// The tiny model as one CPU stage in two lanes on two cores, one step trained.
std::unique_ptr<PipelineTrainer> two_lanes_one_step_in(testing::ScratchDir& dir) {
  const std::string data = dir.file("text.txt", testing::sample_text(300));
  RunConfig run = tiny_run(data, 4);
  run.stages = make_stage_map({DeviceId::cpu()}, {4}, {}, {2});
  auto trainer = std::make_unique<PipelineTrainer>(run, plan_of_run(run, host(2)), host(2), false);
  trainer->train_step();
  return trainer;
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
          const double worst = follow_reference(trainer, reference);
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

// Streamed stages (weights and optimizer in RAM, computing layer-major through a window on the
// GPU's stand-in, standin:0) train like the reference, within 1e-5 relative: the whole model
// streamed, a middle stage streamed between two CPU stages, with windows of 1 and 2 layers; and
// with a layerwise update, which without clipping is the same update.
TEST_CASE("streamed stages through the stand-in equal the reference trainer") {
  testing::ScratchDir dir;
  const std::string data = dir.file("text.txt", testing::sample_text(300));
  const HardwareSpec box = testing::cpu_gpu_box(16 * testing::kGiB, 4 * testing::kGiB, /*cores=*/1).with_stand_ins();
  const DeviceId stand_in = DeviceId::stand_in(0);
  struct Case {
    const char* name;
    StageMap map;
    int window;
    bool layerwise;
  };
  StageMap whole = make_stage_map({stand_in}, {4});
  StageMap middle = make_stage_map({DeviceId::cpu(), stand_in, DeviceId::cpu()}, {0, 3, 4});
  for (StageMap* map : {&whole, &middle}) {
    for (StageSpec& st : map->stages) {
      if (st.device == stand_in) st.weights = st.optimizer = DeviceId::cpu();
    }
  }
  int runs = 0;
  for (const Case& c : {Case{"whole model, window 2", whole, 2, false}, Case{"whole model, window 1", whole, 1, false},
                        Case{"middle stage", middle, 2, false}, Case{"layerwise update, no clipping", whole, 2, true}}) {
    const std::string name = c.name;
    CAPTURE(name);
    std::vector<std::string> clip = c.layerwise ? std::vector<std::string>{"train.grad_clip=0"} : std::vector<std::string>{};
    const Trajectory reference = run_reference(tiny_run(data, 4, clip));
    std::vector<std::string> settings = {"train.schedule=layer-major", "train.checkpointing=true",
                                         std::string("train.layerwise_update=") + (c.layerwise ? "true" : "false")};
    settings.insert(settings.end(), clip.begin(), clip.end());
    RunConfig run = tiny_run(data, 4, settings);
    run.stages = c.map;
    Plan plan = plan_of_run(run, box);
    plan.options.window_layers = c.window;
    PipelineTrainer trainer(run, plan, box, /*keep_trace=*/false);
    const double worst = follow_reference(trainer, reference);
    const std::vector<torch::Tensor> params = trainer.parameters();
    CHECK_MESSAGE(worst <= kRelativeTolerance, "largest relative parameter difference ", worst);
    const int streamed = c.map.num_stages() == 1 ? 0 : 1;
    REQUIRE(trainer.streamed_stage(streamed) != nullptr);
    CHECK(trainer.last_max_in_flight()[static_cast<size_t>(streamed)] == 4);
    if (streamed == 1) {
      // Into the stand-in, activations forward and gradients back: the CPU stages' ops write them
      // into the ring's slots when one is free (the transfer copies the rest there itself).
      const PipelineTrainer::StagedCopies copies = trainer.staged_copies();
      CHECK(copies.total == 2 * 4);
      CHECK(copies.by_op >= 1);
      CHECK(copies.by_op <= copies.total);
    }
    CHECK(std::isfinite(trainer.validation_loss()));
    // Its checkpoint (the masters and their AdamW state) resumes as a resident CPU stage, exactly.
    const std::string run_dir = dir.path() + "/run-" + std::to_string(++runs);
    REQUIRE(mkdir(run_dir.c_str(), 0755) == 0);
    const std::string saved = trainer.save_checkpoint(run_dir, 1);
    RunConfig resident_run = tiny_run(data, 4, settings);
    resident_run.stages = split(1);
    resident_run.train.layerwise_update = false;
    PipelineTrainer resumed(resident_run, plan_of_run(resident_run, host(1)), host(1), /*keep_trace=*/false);
    resumed.resume_from(verify_checkpoint(saved));
    const std::vector<torch::Tensor> restored = resumed.parameters();
    for (size_t i = 0; i < params.size(); ++i) CHECK(torch::equal(restored[i], params[i]));
  }
  // Without CUDA, a stage streaming into a real GPU is refused by name, or placed on the stand-in.
  RunConfig run = tiny_run(data, 4, {"train.schedule=layer-major", "train.checkpointing=true"});
  StageMap on_gpu = make_stage_map({DeviceId::cuda(0)}, {4});
  on_gpu.stages[0].weights = on_gpu.stages[0].optimizer = DeviceId::cpu();
  run.stages = on_gpu;
  if (!cuda_available()) {
    CHECK_THROWS_WITH_AS(place_stages(on_gpu, false, nullptr), doctest::Contains("pass --gpu-stages-on-cpu"), InputError);
    std::vector<std::string> warnings;
    const StageMap placed = place_stages(on_gpu, true, &warnings);
    CHECK(placed.stages[0].device == stand_in);
    CHECK(placed.stages[0].placement().streamed());
    REQUIRE(warnings.size() == 1);
    CHECK(warnings[0].find("it streams through standin:0") != std::string::npos);
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

// A stage with lanes computes micro-batches at once, one per lane on its share of the cores, and
// sums their gradients in micro-batch order (lane 0's in place, the others added in turn): the
// reference's sum. For M in {4, 5, 8} (5: a last group of one), GPipe and 1F1B, with and without
// checkpointing: one stage with two lanes on two cores; then a stage with lanes beside one without,
// first and last. Parameters within 1e-6 relative (the bound; the sums are the reference's
// own, so they come out equal).
TEST_CASE("stages with lanes equal the reference trainer") {
  testing::ScratchDir dir;
  const std::string data = dir.file("text.txt", testing::sample_text(300));
  for (int m : {4, 5, 8}) {
    const Trajectory reference = run_reference(tiny_run(data, m));
    for (ScheduleKind kind : {ScheduleKind::named("gpipe"), ScheduleKind::named("1f1b")}) {
      for (bool ckpt : {false, true}) {
        CAPTURE(m);
        CAPTURE(kind.name());
        CAPTURE(ckpt);
        RunConfig run = tiny_run(data, m, {"train.schedule=" + kind.name(),
                                           std::string("train.checkpointing=") + (ckpt ? "true" : "false")});
        run.stages = make_stage_map({DeviceId::cpu()}, {4}, {}, {2});
        PipelineTrainer trainer(run, plan_of_run(run, host(2)), host(2), false);
        CHECK(describe_cores(trainer.cores()) == "stage 0 uses cores 0,1 in 2 lanes; OpenBLAS 1 thread");
        const double worst = follow_reference(trainer, reference);
        CHECK_MESSAGE(worst <= 1e-6, "largest relative parameter difference ", worst);
        CHECK(trainer.last_max_in_flight()[0] == (kind == ScheduleKind::named("gpipe") ? m : 2));
      }
    }
  }
  const Trajectory reference = run_reference(tiny_run(data, 8));
  for (const auto& [cores, lanes] : {std::pair{std::vector<int>{2, 1}, std::vector<int>{2, 1}},
                                     std::pair{std::vector<int>{1, 2}, std::vector<int>{1, 2}}}) {
    RunConfig run = tiny_run(data, 8);
    run.stages = make_stage_map({DeviceId::cpu(), DeviceId::cpu()}, {2, 4}, cores, lanes);
    PipelineTrainer trainer(run, plan_of_run(run, host(3)), host(3), false);
    const double worst = follow_reference(trainer, reference);
    CHECK_MESSAGE(worst <= 1e-6, "largest relative parameter difference ", worst);
  }
}

// A stage with lanes fails like any other: the first lane's error (by lane order) names the stage,
// the op and the micro-batch; no optimizer steps and no micro-batch stays stashed.
TEST_CASE("a failing lane cancels the step") {
  testing::ScratchDir dir;
  const std::unique_ptr<PipelineTrainer> laned = two_lanes_one_step_in(dir);
  PipelineTrainer& trainer = *laned;
  {
    torch::NoGradGuard no_grad;
    trainer.stage(0).parameters().back().fill_(std::numeric_limits<float>::quiet_NaN());
  }
  std::vector<torch::Tensor> before;
  for (const torch::Tensor& p : trainer.parameters()) before.push_back(p.detach().clone());
  CHECK_THROWS_WITH_AS(trainer.train_step(),
                       doctest::Contains("stage 0 (cpu, embed..head) failed in forward of micro-batch 0 at step 2: loss is nan"),
                       PipelineError);
  const std::vector<torch::Tensor> after = trainer.parameters();
  for (size_t i = 0; i + 1 < after.size(); ++i) CHECK(torch::equal(after[i], before[i]));
  CHECK(trainer.stage(0).in_flight() == 0);
  CHECK(trainer.steps_done() == 1);
}

// A lane whose backward throws (an error in lane 0's gradient hook, on micro-batch 0) ends the step
// with that error; lane 1, waiting to add its gradient after micro-batch 0's, stops waiting instead of
// hanging; nothing steps and the next step runs clean.
TEST_CASE("a backward that fails on one lane never leaves the others waiting") {
  testing::ScratchDir dir;
  const std::unique_ptr<PipelineTrainer> laned = two_lanes_one_step_in(dir);
  PipelineTrainer& trainer = *laned;
  auto armed = std::make_shared<bool>(true);
  trainer.stage(0).parameters().front().register_hook([armed](const torch::Tensor& g) {
    if (*armed) {
      *armed = false;
      throw std::runtime_error("hook fails");
    }
    return g;
  });
  std::vector<torch::Tensor> before;
  for (const torch::Tensor& p : trainer.parameters()) before.push_back(p.detach().clone());
  CHECK_THROWS_WITH_AS(trainer.train_step(), doctest::Contains("failed in backward of micro-batch 0 at step 2: hook fails"),
                       PipelineError);
  const std::vector<torch::Tensor> after = trainer.parameters();
  for (size_t i = 0; i < after.size(); ++i) CHECK(torch::equal(after[i], before[i]));
  CHECK(trainer.stage(0).in_flight() == 0);
  CHECK(trainer.steps_done() == 1);
  CHECK(std::isfinite(trainer.train_step().loss));
  CHECK(trainer.steps_done() == 2);
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

// A gradient that is not finite while the loss is: the step ends with an error naming the layer and
// parameter, the micro-batch and the step; no optimizer steps, no gradient or stash is left.
TEST_CASE("a non-finite gradient never steps, and is named") {
  testing::ScratchDir dir;
  const std::string data = dir.file("text.txt", testing::sample_text(300));
  for (ScheduleKind kind : {ScheduleKind::named("gpipe"), ScheduleKind::named("1f1b")}) {
    CAPTURE(kind.name());
    RunConfig run = tiny_run(data, 4, {"train.schedule=" + kind.name()});
    run.stages = split(3);  // stage 1 is block 1 alone
    PipelineTrainer trainer(run, plan_of_run(run, host(1)), host(1), false);
    trainer.train_step();
    // From now on, micro-batch 2's gradient of block 1's fc_in.weight is NaN (the backward of each
    // micro-batch reaches the parameter once, in micro-batch order).
    torch::Tensor weight = trainer.stage(1).layers()->layers()[0]->named_parameters()["fc_in.weight"];
    auto calls = std::make_shared<int>(0);
    weight.register_hook([calls](const torch::Tensor& g) {
      return (*calls)++ % 4 == 2 ? g * std::numeric_limits<float>::quiet_NaN() : g;
    });
    std::vector<torch::Tensor> before;
    for (const torch::Tensor& p : trainer.parameters()) before.push_back(p.detach().clone());
    CHECK_THROWS_WITH_AS(trainer.train_step(),
                         doctest::Contains("a gradient is not finite at step 2 (global norm nan): block 1 (fc_in.weight), "
                                           "from micro-batch 2; no optimizer stepped"),
                         PipelineError);
    const std::vector<torch::Tensor> after = trainer.parameters();
    for (size_t i = 0; i < after.size(); ++i) CHECK(torch::equal(after[i], before[i]));
    for (int s = 0; s < 3; ++s) {
      CHECK(trainer.stage(s).in_flight() == 0);
      CHECK_FALSE(trainer.stage(s).first_non_finite_gradient().has_value());
    }
    CHECK(trainer.steps_done() == 1);
  }
}

// With compute in float32 and the optimizer on the CPU (the fused CPU AdamW stepping every stage),
// the default model through its three default stages equals the reference trainer (LibTorch's
// AdamW) within 1e-6 relative, for 3 steps, every parameter. One thread per op, as the reference
// computes: the attention's key bias has a gradient that is zero but for rounding, and AdamW turns
// any difference in that rounding into a step of size lr. (With ATen's AVX2 or AVX-512 kernels the
// two runs are the same bits.)
TEST_CASE("the default model with the CPU optimizer equals the reference within 1e-6") {
  RunConfig run = parse_run_config(default_config_text(), "default config",
                                   {"train.steps=10", "train.intra_op_threads=1", "train.blas_threads=1"});
  REQUIRE(run.stages.num_stages() == 3);
  const Trajectory reference = run_reference(run);
  PipelineTrainer trainer(run, plan_of_run(run, host(2)), host(2), false);
  for (int s = 0; s < 3; ++s) CHECK(trainer.stage(s).optimizer().describe() == "fused CPU AdamW in place");
  for (int i = 0; i < kSteps; ++i) {
    const StepRecord r = trainer.train_step();
    CHECK(r.loss == doctest::Approx(reference.losses[i]).epsilon(1e-6));
  }
  const std::vector<torch::Tensor> params = trainer.parameters();
  REQUIRE(params.size() == reference.params.size());
  double worst = 0.0;
  for (size_t i = 0; i < params.size(); ++i) worst = std::max(worst, relative_difference(params[i], reference.params[i]));
  CHECK_MESSAGE(worst <= 1e-6, "largest relative parameter difference ", worst);
}

// The default model as one stage with two lanes (one core each) equals the reference within 1e-6.
TEST_CASE("the default model on two lanes equals the reference within 1e-6") {
  RunConfig run = parse_run_config(default_config_text(), "default config",
                                   {"train.steps=10", "train.intra_op_threads=1", "train.blas_threads=1"});
  const Trajectory reference = run_reference(run);
  run.stages = make_stage_map({DeviceId::cpu()}, {head_layer(run.model)}, {}, {2});
  PipelineTrainer trainer(run, plan_of_run(run, host(2)), host(2), false);
  for (int i = 0; i < kSteps; ++i) {
    const StepRecord r = trainer.train_step();
    CHECK(r.loss == doctest::Approx(reference.losses[i]).epsilon(1e-6));
  }
  const std::vector<torch::Tensor> params = trainer.parameters();
  REQUIRE(params.size() == reference.params.size());
  double worst = 0.0;
  for (size_t i = 0; i < params.size(); ++i) worst = std::max(worst, relative_difference(params[i], reference.params[i]));
  CHECK_MESSAGE(worst <= 1e-6, "largest relative parameter difference ", worst);
}

// Dynamic loss scaling, the logic float16 needs, run on the CPU in float32 where it changes nothing:
// scaling the loss by a power of two and the gradients back is exact, so the losses and parameters
// equal an unscaled run's bit for bit. An overflow injected into one step's gradients skips that
// step (no parameter moves), halves the scale, and is counted; clean steps double it again.
TEST_CASE("dynamic loss scaling: exact when clean, skips and halves on overflow") {
  testing::ScratchDir dir;
  const std::string data = dir.file("text.txt", testing::sample_text(300));
  const RunConfig plain = tiny_run(data, 2);
  RunConfig scaled = tiny_run(data, 2, {"precision.loss_scaling=dynamic", "precision.initial_loss_scale=1024",
                                        "precision.loss_scale_growth_interval=2"});
  PipelineTrainer a(plain, plan_of_run(plain, host(1)), host(1), false);
  PipelineTrainer b(scaled, plan_of_run(scaled, host(1)), host(1), false);
  for (int i = 0; i < 3; ++i) {
    const StepRecord x = a.train_step(), y = b.train_step();
    CHECK(x.loss == y.loss);
    CHECK(x.grad_norm == y.grad_norm);
    REQUIRE(y.loss_scale.has_value());
    CHECK_FALSE(y.skipped);
  }
  // Two clean steps doubled the scale once (1024 -> 2048), and a third is on its way to the next.
  CHECK(b.loss_scaler().scale() == 2048.0);
  const auto pa = a.parameters(), pb = b.parameters();
  for (size_t i = 0; i < pa.size(); ++i) CHECK(torch::equal(pa[i], pb[i]));

  // An infinity in one micro-batch's gradient: the step is skipped, nothing moves, the scale halves.
  torch::Tensor weight = b.stage(0).layers()->layers()[1]->named_parameters()["fc_out.weight"];
  auto calls = std::make_shared<int>(0);
  weight.register_hook([calls](const torch::Tensor& g) {
    return (*calls)++ == 1 ? g * std::numeric_limits<float>::infinity() : g;
  });
  std::vector<torch::Tensor> before;
  for (const torch::Tensor& p : b.parameters()) before.push_back(p.detach().clone());
  const StepRecord skipped = b.train_step();
  CHECK(skipped.skipped);
  CHECK(skipped.skipped_steps == 1);
  CHECK(*skipped.loss_scale == 2048.0);  // the scale the step was taken with
  CHECK(b.loss_scaler().scale() == 1024.0);
  const auto after = b.parameters();
  for (size_t i = 0; i < after.size(); ++i) CHECK(torch::equal(after[i], before[i]));
  const StepRecord next = b.train_step();  // the hook fires no more: a clean step at the halved scale
  CHECK_FALSE(next.skipped);
  CHECK(*next.loss_scale == 1024.0);
  CHECK(std::isfinite(next.loss));
}

// A stage computing in bfloat16 on the CPU (float32 masters, the fused AdamW on them) learns as the
// float32 run does: after 40 steps of the tiny model, validation loss within 3% of float32's.
TEST_CASE("bfloat16 compute learns like float32") {
  testing::ScratchDir dir;
  const std::string data = dir.file("text.txt", testing::sample_text(300));
  std::vector<double> final_losses;
  for (const char* dtype : {"float32", "bfloat16"}) {
    RunConfig run = tiny_run(data, 2, {std::string("precision.cpu=") + dtype, "train.steps=40", "train.lr=3e-3"});
    run.stages = split(2);
    PipelineTrainer trainer(run, plan_of_run(run, host(1)), host(1), false);
    if (std::string(dtype) == "bfloat16") CHECK((trainer.stage(1).compute_dtype() == torch::kBFloat16));
    run_training(trainer, nullptr);
    final_losses.push_back(trainer.validation_loss());
  }
  CHECK_MESSAGE(final_losses[1] == doctest::Approx(final_losses[0]).epsilon(0.03),
                "validation loss float32 " << final_losses[0] << ", bfloat16 " << final_losses[1]);
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
