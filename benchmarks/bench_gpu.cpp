// The GPU stage, measured (issue: pinned rings, copy streams, VRAM cap). Built only with CUDA.
//
// (1) Transfers: H2D and D2H through the staging rings (pipetrain's Transfer, end to end on the
//     host clock, and the copy engine's part timed with CUDA events) against a raw pinned
//     cudaMemcpyAsync of the same size (CUDA events), for a few activation sizes.
// (2) Pipelining: CPU -> GPU -> CPU (stage1 and stage3 on 7 cores each, stage2 on cuda:0) against
//     the same stages run one op after another (PipelineTrainer::set_one_op_at_a_time), advancing
//     one step at a time, round-robin; median tokens/s and the GPU's busy fraction (CUDA events).
// (3) Memory: a model whose training state does not fit in 8 GiB (about 12.9 GB with AdamW), split
//     so that stage2 holds what fits under an 8 GiB cap on the caching allocator; the allocator's
//     peaks against the planner's estimate for cuda:0.
//
//   build/bench_gpu [--steps 8] [--warmup 2] [--json F]
#include <cxxopts.hpp>
#include <nlohmann/json.hpp>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <vector>

#include "memory/estimate.h"
#include "memory/machine_probe.h"
#include "memory/model_desc.h"
#include "memory/param_count.h"
#include "runtime/config/run_config.h"
#include "runtime/backends/registry.h"
#include "runtime/config/hardware_file.h"
#include "runtime/tools/hardware_probe.h"
#include "runtime/backends/cpu/host_allocator.h"
#include "runtime/train/pipeline_trainer.h"
#include "runtime/train/run_plan.h"
#include "runtime/backends/backend.h"
#include "scheduler/planner.h"
#include "scheduler/statistics.h"

using namespace pipetrain;

namespace {

using Clock = std::chrono::steady_clock;
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// (1) One direction through a ring: `sends` back-to-back sends of `bytes`, end to end. With
// `by_op` (host to device), each tensor is first written into the slot staging() offers, as a CPU
// stage's op does (runtime/train/pipeline_trainer.cpp to_boundary): that write is in the time.
nlohmann::json bench_transfer(int64_t bytes, bool host_to_device, int sends, bool by_op = false) {
  const DeviceId gpu = DeviceId::cuda(0);
  RingSpec ring;
  ring.slots = 2;
  ring.slot_bytes = bytes;
  ring.micro_batches = sends;
  std::unique_ptr<StageDevice> producer = make_stage_device(gpu, sends);
  std::unique_ptr<Transfer> t = host_to_device ? make_transfer(DeviceId::cpu(), gpu, ring)
                                               : make_transfer(gpu, DeviceId::cpu(), ring, producer.get(), EventKind::kForward);
  const int64_t floats = bytes / static_cast<int64_t>(sizeof(float));
  const torch::Tensor source = host_to_device ? torch::randn({floats}) : torch::randn({floats}, torch::TensorOptions().device(torch_device(gpu)));
  std::vector<double> end_to_end, engine;
  for (int trial = 0; trial < 6; ++trial) {
    producer->begin_step();
    t->begin_step();
    torch::cuda::synchronize();
    const auto start = Clock::now();
    // Host to device: the GPU tensors are kept, as a stage holds its inputs. Device to host: each
    // CPU tensor is dropped at once, as by a consumer done with it, so its slot serves again (a
    // stage holds at most its in-flight count, which the ring is sized for).
    std::vector<torch::Tensor> keep;
    for (int k = 0; k < sends; ++k) {
      if (!host_to_device) producer->run_op(EventKind::kForward, k, [] {});
      torch::Tensor sent = source;
      if (by_op) {
        torch::Tensor slot = t->staging(k, source.sizes(), source.scalar_type());
        if (slot.defined()) sent = slot.copy_(source);
      }
      torch::Tensor arrived = t->send(k, sent);
      if (host_to_device) keep.push_back(std::move(arrived));
    }
    torch::cuda::synchronize();
    const double wall = seconds_since(start);
    const std::vector<DeviceSpan> spans = t->finish_step();
    producer->finish_step();
    if (trial == 0) continue;  // warm-up: first touches, allocator growth
    end_to_end.push_back(wall / sends);
    std::vector<double> copy;
    for (const DeviceSpan& s : spans) copy.push_back(s.end - s.start);
    engine.push_back(median(copy));
  }
  const double raw = raw_pinned_copy_seconds(gpu, bytes, host_to_device, 50);
  nlohmann::json j;
  j["direction"] = host_to_device ? (by_op ? "H2D, written by the op" : "H2D") : "D2H";
  j["staged_by_op"] = t->staged_by_op();
  j["bytes"] = bytes;
  j["ring_end_to_end_gb_per_s"] = static_cast<double>(bytes) / median(end_to_end) / 1e9;
  j["ring_copy_engine_gb_per_s"] = static_cast<double>(bytes) / median(engine) / 1e9;
  j["raw_pinned_gb_per_s"] = static_cast<double>(bytes) / raw / 1e9;
  j["end_to_end_over_raw"] = raw / median(end_to_end);
  j["copy_engine_over_raw"] = raw / median(engine);
  return j;
}

RunConfig model_run(const std::vector<std::string>& more) {
  std::vector<std::string> overrides = {"stages=none", "data.tokenizer=bytes", "train.optimizer=adamw", "train.steps=1000000",
                                        "train.schedule=1f1b"};
  overrides.insert(overrides.end(), more.begin(), more.end());
  return parse_run_config(default_config_text(), "bench_gpu model", overrides);
}

// (2) Pipelined against one op at a time, round-robin, for a split of the 8-block model given by
// its last layers (embed = 0, blocks 1..8, head = 9).
nlohmann::json bench_pipelining(const HardwareSpec& hw, const std::vector<int64_t>& cuts, int warmup, int steps) {
  RunConfig run = model_run({"model.hidden_dim=512", "model.num_layers=8", "model.num_heads=8",
                             "model.intermediate_size=2048", "model.seq_len=128", "train.micro_batch_size=8",
                             "train.micro_batches=8"});
  const int cpu_cores = std::max(1, (hw.cpu().cores - 2) / 2);
  run.stages = make_stage_map({DeviceId::cpu(), DeviceId::cuda(0), DeviceId::cpu()}, cuts, {cpu_cores, 0, cpu_cores});
  validate_stage_map(run.stages, run.model, hw);
  const Plan plan = plan_of_run(run, hw);
  PipelineTrainer pipelined(run, plan, hw, false);
  PipelineTrainer sequential(run, plan, hw, false);
  sequential.set_one_op_at_a_time(true);
  std::vector<double> tp, ts;
  const double tokens = static_cast<double>(run.train.micro_batch_size * run.train.micro_batches * run.model.seq_len);
  for (int i = 0; i < warmup + steps; ++i) {
    const StepRecord a = pipelined.train_step();
    const StepRecord b = sequential.train_step();
    if (i >= warmup) {
      tp.push_back(tokens / a.step_seconds);
      ts.push_back(tokens / b.step_seconds);
    }
  }
  const PipelineSummary ps = pipelined.summary(), ss = sequential.summary();
  nlohmann::json j;
  j["model"] = {{"hidden", run.model.hidden_dim}, {"blocks", run.model.num_layers}, {"seq", run.model.seq_len},
                {"micro_batch_size", run.train.micro_batch_size}, {"micro_batches", run.train.micro_batches},
                {"params", total_param_count(run.model)}};
  j["split"] = "cpu[" + std::to_string(cpu_cores) + "c] " + describe_range(run.model, run.stages.stages[0].first, run.stages.stages[0].last) +
               " | cuda:0 " + describe_range(run.model, run.stages.stages[1].first, run.stages.stages[1].last) + " | cpu[" +
               std::to_string(cpu_cores) + "c] " + describe_range(run.model, run.stages.stages[2].first, run.stages.stages[2].last);
  j["pipelined_tokens_per_s"] = median(tp);
  j["one_op_at_a_time_tokens_per_s"] = median(ts);
  j["speedup"] = median(tp) / median(ts);
  j["gpu_busy_pipelined"] = ps.stage_busy[1];
  j["gpu_busy_one_op_at_a_time"] = ss.stage_busy[1];
  j["bubble_pipelined"] = ps.measured_bubble;
  j["bubble_predicted"] = ps.predicted_bubble;
  j["pinned_bytes"] = pipelined.pinned_bytes();
  std::vector<double> stage_ms;
  for (const StageTiming& t : ps.op_times.stages) stage_ms.push_back(1e3 * (t.forward_seconds + t.backward_seconds));
  j["stage_forward_plus_backward_ms"] = stage_ms;
  return j;
}

// (3) Peak VRAM against the plan, under an 8 GiB cap, for a model that does not fit in 8 GiB.
nlohmann::json bench_vram(HardwareSpec hw, int steps) {
  for (DeviceSpec& d : hw.devices) {
    if (d.id.has_own_memory()) d.memory_bytes = std::min<int64_t>(d.memory_bytes, static_cast<int64_t>(8 * kGiB));
  }
  RunConfig run = model_run({"model.hidden_dim=2048", "model.num_layers=16", "model.num_heads=16",
                             "model.intermediate_size=8192", "model.seq_len=128", "train.micro_batch_size=2",
                             "train.micro_batches=2", "train.lr=3e-4"});
  // embed + blocks 1..5 | blocks 6..12 on the GPU (what fits the 8 GiB card's budget) | blocks 13..16 + head.
  const int cpu_cores = std::max(1, (hw.cpu().cores - 2) / 2);
  run.stages = make_stage_map({DeviceId::cpu(), DeviceId::cuda(0), DeviceId::cpu()}, {5, 12, 17}, {cpu_cores, 0, cpu_cores});
  validate_stage_map(run.stages, run.model, hw);
  const Plan plan = plan_of_run(run, hw);
  const int64_t params = total_param_count(run.model);
  const double state_bytes = static_cast<double>(params) * 16.0;  // FP32 weights + grads + two AdamW moments
  // The stages' part of the plan (weights, gradients, optimizer, activations, slack) is what the
  // caching allocator holds; the device's need adds the CUDA context and workspaces (reserved).
  int64_t planned = 0, need = 0, budget = 0;
  for (const DeviceMemory& d : plan.memory.devices) {
    if (d.id == DeviceId::cuda(0)) {
      planned = d.need_bytes - d.reserved_bytes;
      need = d.need_bytes;
      budget = d.budget_bytes;
    }
  }
  std::printf("  model: %lld parameters, training state %.2f GiB; cuda:0 planned %.2f GiB of a %.2f GiB budget (%s)\n",
              static_cast<long long>(params), state_bytes / kGiB, static_cast<double>(planned) / kGiB,
              static_cast<double>(budget) / kGiB, plan.memory.fits ? "fits" : "does not fit");
  PipelineTrainer trainer(run, plan, hw, false);
  std::vector<double> step_seconds;
  for (int i = 0; i < steps; ++i) {
    const StepRecord r = trainer.train_step();
    step_seconds.push_back(r.step_seconds);
    std::printf("  step %d: loss %.4f, %.2f s\n", i + 1, r.loss, r.step_seconds);
  }
  const VramLine v = trainer.vram().front();
  nlohmann::json j;
  j["params"] = params;
  j["training_state_gib"] = state_bytes / kGiB;
  j["cap_gib"] = static_cast<double>(v.report.cap_bytes) / kGiB;
  j["card_gib"] = static_cast<double>(v.report.total_bytes) / kGiB;
  j["planned_cuda0_gib"] = static_cast<double>(planned) / kGiB;
  j["budget_cuda0_gib"] = static_cast<double>(budget) / kGiB;
  j["need_cuda0_gib"] = static_cast<double>(need) / kGiB;
  j["fits"] = plan.memory.fits;
  j["peak_allocated_gib"] = static_cast<double>(v.report.peak_allocated_bytes) / kGiB;
  j["peak_reserved_gib"] = static_cast<double>(v.report.peak_reserved_bytes) / kGiB;
  j["peak_allocated_over_plan"] = static_cast<double>(v.report.peak_allocated_bytes) / static_cast<double>(planned);
  j["peak_reserved_over_plan"] = static_cast<double>(v.report.peak_reserved_bytes) / static_cast<double>(planned);
  j["median_step_seconds"] = median(step_seconds);
  return j;
}

}  // namespace

int main(int argc, char** argv) {
  cxxopts::Options options("bench_gpu", "pinned rings, CPU -> GPU -> CPU pipelining and VRAM under a cap");
  options.add_options()("steps", "measured steps (pipelining)", cxxopts::value<int>()->default_value("8"))(
      "warmup", "warm-up steps", cxxopts::value<int>()->default_value("2"))(
      "vram-steps", "steps of the 8 GiB-cap model", cxxopts::value<int>()->default_value("2"))(
      "json", "write the results here", cxxopts::value<std::string>())("h,help", "show this help");
  const auto args = options.parse(argc, argv);
  if (args.count("help")) {
    std::printf("%s", options.help().c_str());
    return 0;
  }
  if (!cuda_available()) {
    std::fprintf(stderr, "bench_gpu: no usable CUDA (%s)\n", torch_build_description().c_str());
    return 2;
  }
  HostCachingAllocator::install();  // as pipetrain's main does: large CPU tensors reuse their pages
  const int steps = args["steps"].as<int>(), warmup = args["warmup"].as<int>(), vram_steps = args["vram-steps"].as<int>();
  if (steps < 1 || warmup < 0 || vram_steps < 1) {
    std::fprintf(stderr, "bench_gpu: --steps and --vram-steps must be >= 1 and --warmup >= 0 (got %d, %d, %d)\n", steps,
                 vram_steps, warmup);
    return 2;
  }
  nlohmann::json out;
  out["torch"] = torch_build_description();
  const HardwareSpec hw = load_hardware("this-machine");
  out["cpu_cores"] = hw.cpu().cores;

  std::printf("(1) transfers through the staging rings against raw pinned cudaMemcpyAsync\n");
  for (int64_t bytes : {int64_t{1} << 20, int64_t{8} << 20, int64_t{64} << 20}) {
    for (const auto& [h2d, by_op] : {std::pair{true, false}, std::pair{true, true}, std::pair{false, false}}) {
      const nlohmann::json j = bench_transfer(bytes, h2d, 16, by_op);
      std::printf("  %s %6.1f MiB: ring %6.2f GB/s end to end, %6.2f GB/s copy engine; raw %6.2f GB/s; ratios %.2f, %.2f\n",
                  j["direction"].get<std::string>().c_str(), static_cast<double>(bytes) / (1 << 20),
                  j["ring_end_to_end_gb_per_s"].get<double>(), j["ring_copy_engine_gb_per_s"].get<double>(),
                  j["raw_pinned_gb_per_s"].get<double>(), j["end_to_end_over_raw"].get<double>(),
                  j["copy_engine_over_raw"].get<double>());
      out["transfers"].push_back(j);
    }
  }
  std::fflush(stdout);
  std::printf("(2) CPU -> GPU -> CPU pipelined against the same stages one op at a time\n");
  // A block on each CPU stage (the CPU stages set the pace), then the GPU holding every block.
  for (const std::vector<int64_t>& cuts : {std::vector<int64_t>{1, 7, 9}, std::vector<int64_t>{0, 8, 9}}) {
    const nlohmann::json j = bench_pipelining(hw, cuts, warmup, steps);
    std::printf("  %s: pipelined %.0f tokens/s, one op at a time %.0f tokens/s: %.2fx; GPU busy %.1f%% against %.1f%%; "
                "bubble %.3f (simulator %.3f)\n",
                j["split"].get<std::string>().c_str(), j["pipelined_tokens_per_s"].get<double>(),
                j["one_op_at_a_time_tokens_per_s"].get<double>(), j["speedup"].get<double>(),
                100.0 * j["gpu_busy_pipelined"].get<double>(), 100.0 * j["gpu_busy_one_op_at_a_time"].get<double>(),
                j["bubble_pipelined"].get<double>(), j["bubble_predicted"].get<double>());
    std::fflush(stdout);
    out["pipelining"].push_back(j);
  }
  std::fflush(stdout);
  std::printf("(3) peak VRAM against the plan under an 8 GiB cap\n");
  out["vram"] = bench_vram(hw, vram_steps);
  std::printf("  cuda:0 peak %.2f GiB allocated, %.2f GiB reserved; plan %.2f GiB (%.3fx, %.3fx); cap %.2f GiB of %.2f\n",
              out["vram"]["peak_allocated_gib"].get<double>(), out["vram"]["peak_reserved_gib"].get<double>(),
              out["vram"]["planned_cuda0_gib"].get<double>(), out["vram"]["peak_allocated_over_plan"].get<double>(),
              out["vram"]["peak_reserved_over_plan"].get<double>(), out["vram"]["cap_gib"].get<double>(),
              out["vram"]["card_gib"].get<double>());
  if (args.count("json")) {
    std::ofstream(args["json"].as<std::string>()) << out.dump(2) << '\n';
  }
  return 0;
}
