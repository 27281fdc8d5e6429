// scheduler/: the simulator on hand-computable cases, and the auto-planner against brute force.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>

#include "memory/errors.h"
#include "planner_fixtures.h"
#include "scheduler/cores.h"
#include "scheduler/cost_model.h"
#include "memory/layer_prefix.h"
#include "memory/param_count.h"
#include "scheduler/planner.h"
#include "scheduler/schedule.h"
#include "scheduler/simulator.h"

using namespace pipetrain;
using namespace pipetrain::testing;

namespace {

std::vector<StageTiming> equal_stages(int s, double f, double b) {
  std::vector<StageTiming> out;
  for (int i = 0; i < s; ++i) out.push_back({f, b, 0.0, 0.0, "r" + std::to_string(i)});
  return out;
}

}  // namespace

// Equal stages without transfers: a step takes (M + S - 1)(f + b) and the bubble is (S-1)/(M+S-1).
TEST_CASE("equal stages: (M+S-1)(f+b) per step") {
  for (ScheduleKind kind : {ScheduleKind::named("gpipe"), ScheduleKind::named("1f1b")}) {
    for (int s : {1, 2, 3, 4}) {
      for (int m : {1, 4, 8}) {
        const SimResult r = simulate(make_schedule(kind, s, m), equal_stages(s, 1.0, 2.0),
                                     std::vector<TransferTiming>(static_cast<size_t>(s - 1)), 1000);
        CAPTURE(kind.name());
        CAPTURE(s);
        CAPTURE(m);
        CHECK(r.step_seconds == doctest::Approx((m + s - 1) * 3.0));
        CHECK(r.bubble_fraction == doctest::Approx(static_cast<double>(s - 1) / (m + s - 1)));
        CHECK(r.tokens_per_s == doctest::Approx(1000.0 / r.step_seconds));
      }
    }
  }
}

// One slow stage sets the pace: GPipe with the middle stage 3x slower takes M(f1+b1) + the others' f+b.
TEST_CASE("one slow stage dominates") {
  std::vector<StageTiming> stages = equal_stages(3, 1.0, 2.0);
  stages[1].forward_seconds = 3.0;
  stages[1].backward_seconds = 6.0;
  const SimResult r = simulate(make_schedule(ScheduleKind::named("gpipe"), 3, 8), stages, std::vector<TransferTiming>(2), 1);
  CHECK(r.step_seconds == doctest::Approx(8 * 9.0 + 3.0 + 3.0));
  CHECK(r.bottleneck == "r1");
  CHECK(r.utilisation.at("r1") == doctest::Approx(72.0 / 78.0));
}

// Two CPU stages that share one pool of cores queue for it; with their own cores they overlap.
TEST_CASE("two CPU stages sharing cores run slower than on their own cores") {
  const Schedule schedule = make_schedule(ScheduleKind::named("1f1b"), 2, 8);
  const SimResult own = simulate(schedule, {{1.0, 2.0, 0.0, 0.0, "cpu[0]"}, {1.0, 2.0, 0.0, 0.0, "cpu[1]"}}, {TransferTiming{}}, 1);
  const SimResult shared = simulate(schedule, {{1.0, 2.0, 0.0, 0.0, "cpu"}, {1.0, 2.0, 0.0, 0.0, "cpu"}}, {TransferTiming{}}, 1);
  CHECK(own.step_seconds == doctest::Approx(9 * 3.0));
  CHECK(shared.step_seconds == doctest::Approx(2 * 8 * 3.0));  // one resource does all the work
  CHECK(shared.step_seconds > own.step_seconds);
}

// A stage with lanes runs a wave of `lanes` ops at once in one op's time: one stage, two lanes, 1F1B
// over groups of 2 takes M / 2 waves of f + b; an odd M a last wave of one. Its resource counts a
// wave once (utilisation 1, bubble 0); beside a stage without lanes the waves pipeline.
TEST_CASE("a stage with lanes runs its ops in waves") {
  std::vector<StageTiming> one = equal_stages(1, 1.0, 2.0);
  one[0].lanes = 2;
  const SimResult r = simulate(make_schedule(ScheduleKind::named("1f1b"), 1, 8, 2), one, {}, 1000);
  CHECK(r.step_seconds == doctest::Approx(4 * 3.0));
  CHECK(r.utilisation.at("r0") == doctest::Approx(1.0));
  CHECK(r.bubble_fraction == doctest::Approx(0.0));
  CHECK(simulate(make_schedule(ScheduleKind::named("1f1b"), 1, 5, 2), one, {}, 1).step_seconds == doctest::Approx(3 * 3.0));
  // Stage 0 with two lanes at half the rate (2, 4), stage 1 alone (1, 2): equal throughput.
  std::vector<StageTiming> two = equal_stages(2, 1.0, 2.0);
  two[0] = {2.0, 4.0, 0.0, 0.0, "r0"};
  two[0].lanes = 2;
  const SimResult p = simulate(make_schedule(ScheduleKind::named("gpipe"), 2, 8, 2), two, {TransferTiming{}}, 1);
  // GPipe: stage 0's forward waves end at 2, 4, 6, 8; stage 1 runs F6 and F7 from 8 to 10, its
  // backwards from 10 to 26; stage 0's last wave (B6, B7) waits for B7 and ends at 26 + 4.
  CHECK(p.pipeline_seconds == doctest::Approx(30.0));
}

// The cost model times a lane on its share of the cores and adds the lanes' gradient sums to the
// backward.
TEST_CASE("lanes in the cost model") {
  const ModelConfig model = small_model(4);
  const HardwareSpec hw = cpu_only_box(4);
  const StageMap plain = make_stage_map({kCpu}, {5});
  const StageMap laned = make_stage_map({kCpu}, {5}, {}, {4});
  const auto a = stage_timings(model, hw, plain, PlanOptions{});
  const auto b = stage_timings(model, hw, laned, PlanOptions{});
  const double r1 = hw.cpu().flops_per_s_with(1), r4 = hw.cpu().flops_per_s_with(4);
  CHECK(b[0].lanes == 4);
  CHECK(b[0].forward_seconds == doctest::Approx(a[0].forward_seconds * r4 / r1));
  const double add = lane_add_seconds(LayerPrefix(describe_model(model)).range(0, 5).params, hw.cpu(), PlanOptions{});
  CHECK(add > 0.0);
  CHECK(b[0].backward_seconds == doctest::Approx(a[0].backward_seconds * r4 / r1 + 3 * add));
}

// Into the GPU, a boundary's bytes are written into a pinned slot by the sending CPU stage's op:
// that write is charged to the op (read and written once over the CPU's bandwidth): an
// activation's to the sender's forward, a gradient's to the sender's backward. The copy itself is
// the link's; out of the GPU, and between two CPU stages, there is no write.
TEST_CASE("a copy into the GPU is charged its staging write, on the sending op") {
  const HardwareSpec hw = cpu_gpu_box();
  const LinkSpec& h2d = *hw.link(kCpu, kGpu);
  const LinkSpec& d2h = *hw.link(kGpu, kCpu);
  const double bytes = 64e6;
  CHECK(boundary_copy_seconds(hw, kCpu, kGpu, bytes) == doctest::Approx(link_seconds(h2d, bytes)));
  CHECK(boundary_copy_seconds(hw, kGpu, kCpu, bytes) == doctest::Approx(link_seconds(d2h, bytes)));
  CHECK(boundary_copy_seconds(hw, kCpu, kCpu, bytes) == 0.0);
  const double write = 2.0 * bytes / hw.cpu().memory_bytes_per_s;
  CHECK(staging_write_seconds(hw, kCpu, kGpu, bytes) == doctest::Approx(write));
  CHECK(staging_write_seconds(hw, kGpu, kCpu, bytes) == 0.0);
  CHECK(staging_write_seconds(hw, kCpu, kCpu, bytes) == 0.0);

  const ModelConfig model = small_model(4);
  const ModelDesc desc = describe_model(model);
  const StageMap map = make_stage_map({kCpu, kGpu, kCpu}, {1, 3, 5});
  PlanOptions o;
  o.schedule = ScheduleKind::named("gpipe");
  const Plan plan = evaluate_plan(desc, hw, map, o);
  const std::vector<StageTiming> plain = stage_timings(model, hw, map, o);
  const double in = staging_write_seconds(hw, kCpu, kGpu, static_cast<double>(plan.boundaries[0].activation_bytes));
  const double back = staging_write_seconds(hw, kCpu, kGpu, static_cast<double>(plan.boundaries[1].activation_bytes));
  CHECK(in > 0.0);
  CHECK(plan.stage_times[0].forward_seconds == doctest::Approx(plain[0].forward_seconds + in));
  CHECK(plan.stage_times[0].backward_seconds == doctest::Approx(plain[0].backward_seconds));
  CHECK(plan.stage_times[1].forward_seconds == doctest::Approx(plain[1].forward_seconds));
  CHECK(plan.stage_times[1].backward_seconds == doctest::Approx(plain[1].backward_seconds));
  CHECK(plan.stage_times[2].forward_seconds == doctest::Approx(plain[2].forward_seconds));
  CHECK(plan.stage_times[2].backward_seconds == doctest::Approx(plain[2].backward_seconds + back));
  CHECK(plan.boundaries[0].predicted.forward_seconds ==
        doctest::Approx(link_seconds(h2d, static_cast<double>(plan.boundaries[0].activation_bytes))));
}

// Transfers run on their own copy engines: they delay a micro-batch but overlap other compute.
TEST_CASE("transfers overlap compute") {
  const Schedule schedule = make_schedule(ScheduleKind::named("gpipe"), 2, 4);
  const std::vector<StageTiming> stages = {{1.0, 2.0, 0.0, 0.0, "cpu"}, {1.0, 2.0, 0.0, 0.0, "cuda:0"}};
  const TransferTiming link{0.5, 0.5, "cpu->cuda:0", "cuda:0->cpu"};
  const SimResult r = simulate(schedule, stages, {link}, 1);
  // Fill: 1 + 0.5 before the GPU starts; drain: 0.5 after its last backward. Then the CPU's 4 backwards.
  CHECK(r.step_seconds == doctest::Approx(1.0 + 0.5 + 4 * 1.0 + 4 * 2.0 + 0.5 + 2.0));
  CHECK(r.utilisation.at("cpu->cuda:0") == doctest::Approx(2.0 / r.step_seconds));
  int sends = 0;
  for (const SimEvent& e : r.events) sends += e.kind == EventKind::kSendActivation ? 1 : 0;
  CHECK(sends == 4);
}

// The optimizer phase as the runtime orders it: after every stage's last backward, each stage's
// share of the global gradient norm in turn, then each stage's optimizer step in turn.
TEST_CASE("the gradient norm, then every optimizer step, end the step") {
  std::vector<StageTiming> stages = equal_stages(2, 1.0, 1.0);
  stages[0].optimizer_seconds = 5.0;
  stages[1].optimizer_seconds = 1.0;
  stages[0].norm_seconds = 0.5;
  stages[1].norm_seconds = 0.25;
  const SimResult r = simulate(make_schedule(ScheduleKind::named("gpipe"), 2, 2), stages, {TransferTiming{}}, 1);
  CHECK(r.pipeline_seconds == doctest::Approx(6.0));
  CHECK(r.step_seconds == doctest::Approx(6.0 + 0.5 + 0.25 + 5.0 + 1.0));
  CHECK(r.optimizer_phase_seconds == doctest::Approx(6.75));
  // No update starts before the whole norm is known.
  double last_norm_end = 0.0, first_step_start = 1e9;
  for (const SimEvent& e : r.events) {
    if (e.kind == EventKind::kGradNorm) last_norm_end = std::max(last_norm_end, e.end);
    if (e.kind == EventKind::kOptimizer) first_step_start = std::min(first_step_start, e.start);
  }
  CHECK(last_norm_end == doctest::Approx(6.75));
  CHECK(first_step_start >= last_norm_end);
}

namespace {

// A streamed stage of `layers` equal layers.
StreamedTiming streamed_layers(int layers, StreamedLayerTiming each, int window) {
  StreamedTiming t;
  t.layers.assign(static_cast<size_t>(layers), each);
  t.window_layers = window;
  t.load_resource = "h2d";
  t.gradient_resource = "d2h";
  t.step_resource = "ram";
  return t;
}

// (start, end) of each event of `kind`, in visit order.
std::vector<std::pair<double, double>> spans(const std::vector<BlockEvent>& events, BlockEventKind kind) {
  std::vector<std::pair<double, double>> out;
  for (const BlockEvent& e : events) {
    if (e.kind == kind) out.emplace_back(e.start, e.end);
  }
  return out;
}

using Spans = std::vector<std::pair<double, double>>;

}  // namespace

// Forward through 3 layers (load 3, compute 1 per micro-batch, M = 1). With a window of 2, layer 2
// loads while layer 1 computes, into the slot layer 0 freed at 4; with a window of 1 every load
// waits until the layer before it is done computing, so a slot is never refilled early.
TEST_CASE("a streamed forward block: loads overlap compute within the window") {
  StreamedLayerTiming layer;
  layer.forward_seconds = 1.0;
  layer.load_seconds = 3.0;
  const auto two = streamed_block(streamed_layers(3, layer, 2), true, 1, 0.0);
  CHECK(spans(two, BlockEventKind::kLoad) == Spans{{0, 3}, {3, 6}, {6, 9}});
  CHECK(spans(two, BlockEventKind::kCompute) == Spans{{3, 4}, {6, 7}, {9, 10}});
  const auto one = streamed_block(streamed_layers(3, layer, 1), true, 1, 0.0);
  CHECK(spans(one, BlockEventKind::kLoad) == Spans{{0, 3}, {4, 7}, {8, 11}});
  CHECK(spans(one, BlockEventKind::kCompute) == Spans{{3, 4}, {7, 8}, {11, 12}});
  // Each load of the window-1 block starts only once the layer it replaces is computed.
  for (size_t i = 1; i < 3; ++i) CHECK(spans(one, BlockEventKind::kLoad)[i].first >= spans(one, BlockEventKind::kCompute)[i - 1].second);
}

// Backward visits the layers in reverse: each layer computes over M = 2 micro-batches, then sends
// its gradients out (3 s). Two gradient slots on the GPU: layer 0 may not start accumulating until
// layer 2's gradients have left (at 6), though its weights arrived at 4. With steps (5 s), one
// worker copies out and steps in turn: a copy out waits for the previous layer's step, and the
// GPU for the gradient slot that copy frees.
TEST_CASE("a streamed backward block: gradient slots and steps") {
  StreamedLayerTiming layer;
  layer.backward_seconds = 1.0;
  layer.load_seconds = 1.0;
  layer.gradient_seconds = 3.0;
  const auto b = streamed_block(streamed_layers(3, layer, 2), false, 2, 0.0);
  CHECK(spans(b, BlockEventKind::kLoad) == Spans{{0, 1}, {1, 2}, {3, 4}});
  CHECK(spans(b, BlockEventKind::kCompute) == Spans{{1, 3}, {3, 5}, {6, 8}});
  CHECK(spans(b, BlockEventKind::kGradientOut) == Spans{{3, 6}, {6, 9}, {9, 12}});
  CHECK(spans(b, BlockEventKind::kStep).empty());
  std::vector<int> order;
  for (const BlockEvent& e : b) {
    if (e.kind == BlockEventKind::kCompute) order.push_back(e.layer);
  }
  CHECK(order == std::vector<int>{2, 1, 0});
  layer.step_seconds = 5.0;
  const auto stepped = streamed_block(streamed_layers(3, layer, 2), false, 2, 0.0);
  CHECK(spans(stepped, BlockEventKind::kStep) == Spans{{6, 11}, {14, 19}, {22, 27}});
  CHECK(spans(stepped, BlockEventKind::kGradientOut) == Spans{{3, 6}, {11, 14}, {19, 22}});  // each after the step before
  CHECK(spans(stepped, BlockEventKind::kCompute) == Spans{{1, 3}, {3, 5}, {6, 8}});
}

// A whole step of one streamed stage: its forward block once all inputs are there, the backward
// block right after (the loss is on this stage), then the optimizer phase on the CPU side.
TEST_CASE("the simulator replays a streamed stage as layer-major blocks") {
  StreamedLayerTiming layer;
  layer.forward_seconds = 1.0;
  layer.backward_seconds = 2.0;
  layer.load_seconds = 0.5;
  layer.gradient_seconds = 0.5;
  StageTiming stage{6.0, 12.0, 4.0, 1.0, "gpu"};
  stage.streamed = streamed_layers(3, layer, 2);
  const SimResult r = simulate(make_schedule(ScheduleKind::named("layer-major"), 1, 2), {stage}, {}, 100);
  // Forward: load 0.5, then 3 layers x 2 micro-batches x 1 s, loads hidden: ends at 6.5. Backward
  // from 6.5: load 0.5, 3 x 2 x 2 s: 19; the last gradients leave at 19.5; then norm 1 and step 4.
  CHECK(r.pipeline_seconds == doctest::Approx(19.5));
  CHECK(r.step_seconds == doctest::Approx(24.5));
  CHECK(r.utilisation.at("h2d") == doctest::Approx(3.0 / 24.5));
  CHECK(r.utilisation.at("ram") == doctest::Approx(5.0 / 24.5));  // the phase runs where the optimizer lives
  int forwards = 0;
  for (const SimEvent& e : r.events) forwards += e.kind == EventKind::kForward && e.micro_batch == -1 && e.layer >= 0;
  CHECK(forwards == 3);
  // 1F1B interleaves micro-batches, which a streamed stage cannot: refused, not mis-simulated.
  CHECK_THROWS_AS(simulate(make_schedule(ScheduleKind::named("1f1b"), 2, 2), {stage, stage}, {TransferTiming{}}, 1),
                  std::invalid_argument);
}

namespace {

// Every plan the planner could pick, simulated: the brute-force reference.
double brute_force_best(const ModelDesc& model, const HardwareSpec& hw, const PlanOptions& base,
                        const PlannerChoices& choices) {
  double best = std::numeric_limits<double>::infinity();
  const int64_t n = model.config.num_model_layers();
  for (const auto& shape : choices.shapes.empty() ? default_shapes(hw) : choices.shapes) {
    const int s = static_cast<int>(shape.size());
    std::vector<std::vector<int>> splits = {std::vector<int>(shape.size(), 0)};
    std::vector<int> cpu;
    for (int i = 0; i < s; ++i) {
      if (shape[i].is_cpu()) cpu.push_back(i);
    }
    if (cpu.size() == 2) {
      for (int c = 1; c < hw.cpu().cores; ++c) {
        for (int d = 1; c + d <= hw.cpu().cores; ++d) {
          std::vector<int> split(shape.size(), 0);
          split[cpu[0]] = c;
          split[cpu[1]] = d;
          splits.push_back(split);
        }
      }
    }
    std::vector<int64_t> last(static_cast<size_t>(s));
    std::function<void(int, int64_t)> cut = [&](int i, int64_t first) {
      if (i == s - 1) {
        last[i] = n - 1;
        std::vector<std::pair<std::vector<int>, std::vector<int>>> cores_and_lanes;
        for (const auto& split : splits) {
          for (const auto& lanes : lane_splits(shape, split, hw, choices.choose_lanes)) cores_and_lanes.emplace_back(split, lanes);
        }
        for (const auto& [split, lanes] : cores_and_lanes) {
          // GPU stages' optimizer where they compute, or in RAM; or weights and optimizer in RAM
          // (streamed, which runs layer-major only).
          for (int home : {0, 1, 2, 3, 4, 5}) {  // 2..5: streamed through a window of home - 1 layers
            StageMap map = make_stage_map(shape, last, split, lanes);
            for (StageSpec& st : map.stages) {
              if (home >= 1 && st.device.has_own_memory()) st.optimizer = DeviceId::cpu();
              if (home >= 2 && st.device.has_own_memory()) st.weights = DeviceId::cpu();
            }
            const std::vector<ScheduleKind> kinds =
                home >= 2 ? std::vector<ScheduleKind>{ScheduleKind::named("layer-major")}
                          : std::vector<ScheduleKind>{ScheduleKind::named("gpipe"), ScheduleKind::named("1f1b")};
            for (ScheduleKind kind : kinds) {
              for (int m : {1, 2, 4, 8, 16, 32}) {
                for (bool ckpt : {false, true}) {
                  if (home >= 2 && !ckpt) continue;  // streamed stages recompute in backward
                  PlanOptions o = base;
                  if (home >= 2) o.window_layers = home - 1;
                  o.schedule = kind;
                  o.micro_batches = m;
                  o.checkpointing = ckpt;
                  const Plan p = evaluate_plan(model, hw, map, o);
                  if (p.memory.fits) best = std::min(best, p.predicted.step_seconds / m);
                }
              }
            }
          }
        }
        return;
      }
      for (int64_t end = first; end <= n - (s - i); ++end) {
        last[i] = end;
        cut(i + 1, end + 1);
      }
    };
    cut(0, 0);
  }
  return best;
}

}  // namespace

// On small cases the planner's choice is exactly the brute-force optimum, with and without a GPU,
// with memory budgets that rule plans out.
TEST_CASE("planner optimality against brute force") {
  PlanOptions base;
  base.micro_batch_size = 2;
  struct Case {
    const char* name;
    HardwareSpec hw;
    int64_t layers;
    bool layerwise_update;
  };
  HardwareSpec tight_gpu = cpu_gpu_box(16 * kGiB, 3 * 1024 * 1024);  // fits only a block or two
  HardwareSpec tight_ram = cpu_gpu_box(60 * 1024 * 1024, 4 * kGiB);
  // A GPU too small for its layers' weights, on a slow link: streaming has to pay for its copies.
  HardwareSpec streaming = cpu_gpu_box(16 * kGiB, 2 * 1024 * 1024);
  streaming.links = {{kCpu, kGpu, 2e9, 10e-6}, {kGpu, kCpu, 2e9, 10e-6}};
  for (const Case& c : std::vector<Case>{{"cpu only, 2 cores", cpu_only_box(2), 4, false},
                                         {"cpu only, 3 cores", cpu_only_box(3), 3, false},
                                         {"cpu + gpu", cpu_gpu_box(), 3, false},
                                         {"tight vram", tight_gpu, 4, false},
                                         {"tight ram", tight_ram, 3, false},
                                         {"streaming pays", streaming, 4, false},
                                         {"streaming, layerwise update", streaming, 4, true}}) {
    const std::string name = c.name;
    CAPTURE(name);
    base.layerwise_update = c.layerwise_update;
    const ModelDesc model = describe_model(small_model(c.layers));
    const PlannerResult r = plan_auto(model, c.hw, base, PlannerChoices{});
    const double reference = brute_force_best(model, c.hw, base, PlannerChoices{});
    CAPTURE(r.candidates);
    CAPTURE(r.feasible);
    CAPTURE(r.simulated);
    CAPTURE(reference);
    REQUIRE(!r.plans.empty());
    const Plan& best = r.plans.front();
    CHECK(best.memory.fits);
    CHECK(best.predicted.step_seconds / best.options.micro_batches == doctest::Approx(reference).epsilon(1e-12));
    CHECK(r.simulated < r.feasible);
    if (name.find("streaming") == 0) {
      // The optimum there streams: the brute force above covered that dimension, not only the others.
      CHECK(std::any_of(best.layers.begin(), best.layers.end(), [](const Placement& p) { return p.streamed(); }));
      CHECK(best.options.schedule == ScheduleKind::named("layer-major"));
    }
    for (size_t i = 1; i < r.plans.size(); ++i) {
      // Best first; plans equal to rounding are ordered by fewer stages instead.
      CHECK(r.plans[i - 1].predicted.step_seconds / r.plans[i - 1].options.micro_batches <=
            r.plans[i].predicted.step_seconds / r.plans[i].options.micro_batches * (1.0 + 1e-12));
    }
  }
}

// Equally fast plans are offered by lower peak memory, then fewer stages: on one stage GPipe and
// 1F1B take the same time, and 1F1B, holding one micro-batch's activations instead of all of them,
// comes first (the planner once chose GPipe on such a tie, and GPipe measured 5% slower).
TEST_CASE("a tie in predicted time goes to the plan with less memory") {
  const ModelDesc model = describe_model(small_model(4));
  PlannerChoices one_stage;
  one_stage.shapes = {{kCpu}};
  one_stage.micro_batch_counts = {4};
  one_stage.checkpointing = {false};
  one_stage.optimizer_in_ram = {false};
  one_stage.choose_lanes = false;
  const PlannerResult r = plan_auto(model, cpu_only_box(2), PlanOptions{}, one_stage);
  REQUIRE(r.plans.size() == 2);
  const Plan& first = r.plans[0];
  const Plan& second = r.plans[1];
  CHECK(first.predicted.step_seconds == doctest::Approx(second.predicted.step_seconds).epsilon(1e-12));
  CHECK(first.options.schedule == ScheduleKind::named("1f1b"));
  CHECK(second.options.schedule == ScheduleKind::named("gpipe"));
  CHECK(peak_memory_share(first) < peak_memory_share(second));
  CHECK(better_plan(first, second));
  CHECK_FALSE(better_plan(second, first));
}

// A model that fits nowhere gives no plan; a fixed choice is respected.
TEST_CASE("planner limits and fixed choices") {
  const ModelDesc model = describe_model(small_model(4));
  HardwareSpec nothing = cpu_gpu_box(64 * 1024 * 1024, 1024 * 1024);
  nothing.devices[0].reserved_bytes = 57 * 1024 * 1024;
  CHECK(plan_auto(model, nothing, PlanOptions{}, PlannerChoices{}).plans.empty());

  PlannerChoices fixed;
  fixed.shapes = {{kCpu, kGpu, kCpu}};
  fixed.schedules = {ScheduleKind::named("gpipe")};
  fixed.micro_batch_counts = {4};
  fixed.checkpointing = {false};
  const PlannerResult r = plan_auto(model, cpu_gpu_box(), PlanOptions{}, fixed);
  REQUIRE(!r.plans.empty());
  for (const Plan& p : r.plans) {
    CHECK(p.map.num_stages() == 3);
    CHECK(p.map.stages[1].device == kGpu);
    CHECK(p.options.schedule == ScheduleKind::named("gpipe"));
    CHECK(p.options.micro_batches == 4);
  }
  fixed.shapes = {{kCpu, DeviceId::cuda(1)}};
  CHECK_THROWS_WITH_AS(plan_auto(model, cpu_gpu_box(), PlanOptions{}, fixed), doctest::Contains("device 'cuda:1' is not in hardware"),
                       InputError);
  CHECK_THROWS_WITH_AS(parse_shape({"cpu", "tpu"}), doctest::Contains("'tpu'"), InputError);
  CHECK(parse_shape({"cpu", "cuda:0", "cpu"}) == Shape{kCpu, kGpu, kCpu});
}

// The fit check counts every device of the hardware, however many: a plan on the 18th GPU is
// held to that GPU's budget (an earlier fit check looked at the first 16 devices only).
TEST_CASE("the fit check counts every device") {
  const ModelDesc model = describe_model(small_model(4));
  HardwareSpec many = cpu_gpu_box();
  for (int i = 1; i < 18; ++i) {
    DeviceSpec gpu = many.devices[1];
    gpu.id = DeviceId::cuda(i);
    many.devices.push_back(gpu);
    many.links.push_back({kCpu, gpu.id, 10e9, 10e-6});
    many.links.push_back({gpu.id, kCpu, 10e9, 10e-6});
  }
  many.devices.back().memory_bytes = 256 * 1024;  // cuda:17 cannot hold even the head
  validate_hardware(many);
  PlannerChoices on_last;
  on_last.shapes = {{kCpu, DeviceId::cuda(17)}};
  CHECK(plan_auto(model, many, PlanOptions{}, on_last).plans.empty());
  on_last.shapes = {{kCpu, DeviceId::cuda(16)}};
  CHECK_FALSE(plan_auto(model, many, PlanOptions{}, on_last).plans.empty());
  const Plan p = evaluate_plan(model, many, make_stage_map({kCpu, DeviceId::cuda(17)}, {1, 5}), PlanOptions{});
  CHECK_FALSE(p.memory.fits);
  CHECK_FALSE(p.memory.devices.back().fits);
}

// 200 layers: the bound prunes nearly everything, so the planner simulates a tiny fraction of the
// candidates it enumerates (its wall time is measured in benchmarks/bench_planner, not here).
TEST_CASE("planner prunes at 200 layers") {
  const ModelDesc model = describe_model(small_model(198));
  const PlannerResult r = plan_auto(model, cpu_gpu_box(64 * kGiB, 8 * kGiB, 8), PlanOptions{}, PlannerChoices{});
  REQUIRE(!r.plans.empty());
  CHECK(r.candidates > 1000000);
  CHECK_MESSAGE(r.simulated * 1000 < r.feasible, "simulated " << r.simulated << " of " << r.feasible << " feasible");
}

// Core assignment: owned cores first, in stage order; the shared pool is what is left; OpenBLAS gets
// one thread as soon as two groups compute at once.
TEST_CASE("assign_cores: owned cores, the shared pool, and BLAS threads") {
  const HardwareSpec hw = cpu_gpu_box(16 * kGiB, 4 * kGiB, 4);
  const ModelConfig model = small_model(4);  // layers 0..5

  // stage 0 and 2 share what stage 1 does not own: the reference box's shape with the GPU stage on cores.
  CoreAssignment mixed = assign_cores(make_stage_map({kCpu, kCpu, kCpu}, {1, 3, 5}, {0, 1, 0}), hw);
  CHECK(mixed.group_of_stage == std::vector<int>{1, 0, 1});
  CHECK(mixed.groups[0].resource == "cpu[1]");
  CHECK(mixed.groups[0].cpus == std::vector<int>{0});
  CHECK(mixed.groups[1].resource == "cpu");
  CHECK(mixed.groups[1].cpus == std::vector<int>{1, 2, 3});
  CHECK(mixed.groups[1].stages == std::vector<int>{0, 2});
  CHECK(mixed.blas_threads == 1);
  CHECK(mixed.groups[1].intra_op_threads == 3);
  CHECK(mixed.compute_threads == 4);
  CHECK(describe_cores(mixed) == "stage 1 owns core 0; stages 0,2 share cores 1,2,3; OpenBLAS 1 thread");

  // One group: it gets every BLAS thread. A GPU stage belongs to no group.
  CoreAssignment gpu = assign_cores(make_stage_map({kCpu, kGpu, kCpu}, {1, 3, 5}), hw);
  CHECK(gpu.group_of_stage == std::vector<int>{0, -1, 0});
  CHECK(gpu.blas_threads == 4);
  CHECK(gpu.groups[0].intra_op_threads == 1);

  CoreAssignment owned = assign_cores(make_stage_map({kCpu, kCpu}, {2, 5}, {1, 3}), hw);
  CHECK(owned.groups[1].cpus == std::vector<int>{1, 2, 3});
  // The groups' resources are the ones the simulator queues ops on, so traces line up.
  const StageMap map = make_stage_map({kCpu, kCpu, kCpu}, {1, 3, 5}, {0, 1, 0});
  const auto timings = stage_timings(model, hw, map, PlanOptions{});
  for (int s = 0; s < 3; ++s) CHECK(timings[s].resource == mixed.groups[mixed.group_of_stage[s]].resource);
  // The shared pool computes at the rate of the cores it has (3 of 4), not the whole CPU's.
  CHECK(timings[0].forward_seconds > 0.0);
  const DeviceSpec& cpu = hw.cpu();
  const double stage1_over_stage0 = timings[1].forward_seconds / timings[0].forward_seconds;
  const RangeCosts r0 = LayerPrefix(describe_model(model)).range(0, 1), r1 = LayerPrefix(describe_model(model)).range(2, 3);
  CHECK(stage1_over_stage0 == doctest::Approx((r1.forward_flops_per_token / cpu.flops_per_s_with(1)) /
                                              (r0.forward_flops_per_token / cpu.flops_per_s_with(3))));
}

// A stage with lanes splits its cores into equal shares; OpenBLAS then gets one thread.
TEST_CASE("assign_cores: lanes") {
  const HardwareSpec hw = cpu_only_box(4);
  const CoreAssignment one = assign_cores(make_stage_map({kCpu}, {5}, {}, {2}), hw);
  CHECK(one.groups[0].lanes == 2);
  CHECK(one.groups[0].lane_cpus(0) == std::vector<int>{0, 1});
  CHECK(one.groups[0].lane_cpus(1) == std::vector<int>{2, 3});
  CHECK(one.groups[0].intra_op_threads == 2);
  CHECK(one.blas_threads == 1);
  CHECK(describe_cores(one) == "stage 0 uses cores 0,1,2,3 in 2 lanes; OpenBLAS 1 thread");
  const CoreAssignment mixed = assign_cores(make_stage_map({kCpu, kCpu}, {2, 5}, {3, 1}, {3, 1}), hw);
  CHECK(mixed.groups[0].lane_cpus(2) == std::vector<int>{2});
  CHECK(mixed.groups[0].intra_op_threads == 1);
  CHECK(mixed.groups[1].lanes == 1);
}

// A shared stage needs a core no stage owns: refused with the numbers, by validation and assignment.
TEST_CASE("a shared cpu stage left without cores is refused") {
  const HardwareSpec hw = cpu_only_box(2);
  const ModelConfig model = small_model(4);
  const StageMap map = make_stage_map({kCpu, kCpu, kCpu}, {1, 3, 5}, {1, 1, 0});
  CHECK_THROWS_WITH_AS(validate_stage_map(map, model, hw),
                       doctest::Contains("stage 2 has cores: 0 (it shares the cores no stage owns), but the other cpu "
                                         "stages own all 2 cores"),
                       InputError);
  CHECK_THROWS_AS(assign_cores(map, hw), InputError);
}

namespace {

PlanOptions micro_batches_of(int64_t size) {
  PlanOptions o;
  o.micro_batch_size = size;
  return o;
}

// Measured times where the last block is slow: FLOPs would split the blocks evenly, measurements
// move the boundary.
HardwareSpec with_measured_times(const ModelConfig& model, int64_t micro_batch_size) {
  HardwareSpec hw = cpu_only_box(2);
  hw.measured.model_key = profile_key(model, micro_batch_size);
  const size_t n = static_cast<size_t>(model.num_model_layers());
  for (int cores : {1, 2}) {
    LayerTimes e{kCpu, cores, std::vector<double>(n, 1e-3 / cores), std::vector<double>(n, 2e-3 / cores),
                 std::vector<double>(n, 1e-4)};
    e.forward_seconds[n - 2] *= 5.0;  // the last block
    e.backward_seconds[n - 2] *= 5.0;
    hw.measured.entries.push_back(e);
  }
  return hw;
}

}  // namespace

// With measured times for this model, a stage's op times are the sums of its layers' measured times
// (plus a forward under checkpointing), its optimizer step too; for another model, FLOPs again.
TEST_CASE("measured layer times replace FLOP rates for the model they were measured for") {
  const ModelConfig model = small_model(4);  // layers 0..5
  PlanOptions o;
  o.micro_batch_size = 2;
  const HardwareSpec hw = with_measured_times(model, 2);
  validate_hardware(hw);
  const StageMap map = make_stage_map({kCpu, kCpu}, {2, 5}, {1, 1});
  const auto t = stage_timings(model, hw, map, o);
  CHECK(t[0].forward_seconds == doctest::Approx(3e-3));
  CHECK(t[1].forward_seconds == doctest::Approx(1e-3 + 5e-3 + 1e-3));
  CHECK(t[1].backward_seconds == doctest::Approx(2e-3 + 10e-3 + 2e-3));
  CHECK(t[0].optimizer_seconds == doctest::Approx(3e-4));
  o.checkpointing = true;
  const auto ckpt = stage_timings(model, hw, map, o);
  CHECK(ckpt[1].backward_seconds == doctest::Approx(14e-3 + 7e-3));
  // Shared pool of both cores: the 2-core entry.
  const auto shared = stage_timings(model, hw, make_stage_map({kCpu}, {5}), micro_batches_of(2));
  CHECK(shared[0].forward_seconds == doctest::Approx((5 * 1e-3 + 5e-3) / 2));
  // Another micro-batch size: the measurements do not apply.
  PlanOptions other;
  other.micro_batch_size = 4;
  CHECK(StageTimer(model, hw, other).uses_measured_times() == false);
  CHECK(StageTimer(model, hw, micro_batches_of(2)).uses_measured_times() == true);
}

// The planner's answer with measured times is still the brute-force optimum, and the slow block
// pulls the boundary towards it.
TEST_CASE("plan_auto with measured times equals brute force") {
  const ModelConfig model = small_model(4);
  PlanOptions base;
  base.micro_batch_size = 2;
  const HardwareSpec hw = with_measured_times(model, 2);
  const ModelDesc desc = describe_model(model);
  const PlannerResult r = plan_auto(desc, hw, base, PlannerChoices{});
  REQUIRE(!r.plans.empty());
  const double reference = brute_force_best(desc, hw, base, PlannerChoices{});
  CHECK(r.plans.front().predicted.step_seconds / r.plans.front().options.micro_batches ==
        doctest::Approx(reference).epsilon(1e-12));
}

// Where a stage's cores scale poorly (2 cores only 1.25x one), two lanes of one core each beat one
// stage on both: the planner chooses them, and its answer is still the brute-force optimum. Lane
// counts follow the cores: every divisor, for a stage alone on its cores.
TEST_CASE("the planner chooses lanes when the profile says they are faster") {
  const ModelConfig model = small_model(4);
  PlanOptions base;
  base.micro_batch_size = 2;
  HardwareSpec hw = with_measured_times(model, 2);
  for (LayerTimes& e : hw.measured.entries) {
    if (e.cores != 2) continue;
    const LayerTimes& one = hw.measured.entries.front();
    for (size_t i = 0; i < e.forward_seconds.size(); ++i) {
      e.forward_seconds[i] = one.forward_seconds[i] / 1.25;
      e.backward_seconds[i] = one.backward_seconds[i] / 1.25;
    }
  }
  const ModelDesc desc = describe_model(model);
  PlannerChoices one_stage;
  one_stage.shapes = {{kCpu}};
  const PlannerResult r = plan_auto(desc, hw, base, one_stage);
  REQUIRE(!r.plans.empty());
  CHECK(r.plans.front().map.stages[0].lanes == 2);
  CHECK(r.plans.front().cores.groups[0].lanes == 2);
  PlannerChoices no_lanes = one_stage;
  no_lanes.choose_lanes = false;
  const PlannerResult plain = plan_auto(desc, hw, base, no_lanes);
  CHECK(plain.plans.front().map.stages[0].lanes == 1);
  CHECK(r.plans.front().predicted.tokens_per_s > 1.2 * plain.plans.front().predicted.tokens_per_s);
  const PlannerResult any = plan_auto(desc, hw, base, PlannerChoices{});
  CHECK(any.plans.front().predicted.step_seconds / any.plans.front().options.micro_batches ==
        doctest::Approx(brute_force_best(desc, hw, base, PlannerChoices{})).epsilon(1e-12));

  // Offered: one lane per core for a shape's only CPU stage.
  CHECK(lane_splits({kCpu}, {0}, cpu_only_box(4), true) == std::vector<std::vector<int>>{{1}, {4}});
  CHECK(lane_splits({kCpu, kGpu}, {0, 0}, cpu_gpu_box(16 * kGiB, 4 * kGiB, 4), true) ==
        std::vector<std::vector<int>>{{1, 1}, {4, 1}});
  CHECK(lane_splits({kCpu, kGpu, kCpu}, {0, 0, 0}, cpu_only_box(4), true).size() == 1);  // two CPU stages
  CHECK(lane_splits({kCpu, kCpu}, {2, 2}, cpu_only_box(4), true).size() == 1);
  CHECK(lane_splits({kCpu}, {0}, cpu_only_box(4), false).size() == 1);
}

// Measured times that do not fit the hardware are refused with the entry named.
TEST_CASE("measured times are validated") {
  const ModelConfig model = small_model(4);
  HardwareSpec hw = with_measured_times(model, 2);
  hw.measured.entries[0].cores = 3;
  CHECK_THROWS_WITH_AS(validate_hardware(hw), doctest::Contains("measured.cpu[cores 3].cores must be in [1, 2]"), InputError);
  hw = with_measured_times(model, 2);
  hw.measured.entries[1].backward_seconds.pop_back();
  CHECK_THROWS_WITH_AS(validate_hardware(hw), doctest::Contains("needs forward, backward and optimizer times for the same layers"),
                       InputError);
  hw = with_measured_times(model, 2);
  hw.measured.entries[0].forward_seconds[1] = -1.0;
  CHECK_THROWS_WITH_AS(validate_hardware(hw), doctest::Contains("not a duration"), InputError);
  hw = with_measured_times(model, 2);
  hw.measured.entries[1].cores = 1;
  CHECK_THROWS_WITH_AS(validate_hardware(hw), doctest::Contains("appears twice"), InputError);
  hw = with_measured_times(model, 2);
  hw.measured.entries[0].device = DeviceId::cuda(3);
  CHECK_THROWS_WITH_AS(validate_hardware(hw), doctest::Contains("names a device that is not listed"), InputError);
}

// A CPU stage measured beside neighbours runs alone_ratio of that time while no other CPU stage
// computes: with the other stage nearly idle, the busy stage's ops shrink almost to alone_ratio; with
// both busy all the time (and for a stage with lanes, whose lanes are neighbours), they keep their
// times; the planner's answer is still the brute-force optimum.
TEST_CASE("a stage alone on the CPU runs at its alone ratio") {
  const Schedule gpipe = make_schedule(ScheduleKind::named("gpipe"), 2, 8);
  std::vector<StageTiming> lopsided = {{1.0, 2.0, 0.0, 0.0, "cpu[0]"}, {0.001, 0.002, 0.0, 0.0, "cpu[1]"}};
  lopsided[0].alone_ratio = 0.5;
  lopsided[1].alone_ratio = 0.5;
  std::vector<StageTiming> replayed;
  const SimResult r = simulate_with_neighbours(gpipe, lopsided, {TransferTiming{}}, 1, {true, true}, &replayed);
  CHECK(replayed[0].forward_seconds == doctest::Approx(0.5).epsilon(0.01));
  CHECK(replayed[0].backward_seconds == doctest::Approx(1.0).epsilon(0.01));
  CHECK(r.step_seconds < 0.51 * simulate(gpipe, lopsided, {TransferTiming{}}, 1).step_seconds);
  // Not CPU stages (a GPU's resource): nothing changes.
  CHECK(simulate_with_neighbours(gpipe, lopsided, {TransferTiming{}}, 1, {false, false}).step_seconds ==
        doctest::Approx(simulate(gpipe, lopsided, {TransferTiming{}}, 1).step_seconds));
  // Two equal stages of 1F1B over 32 micro-batches: each is alone only while filling and draining.
  std::vector<StageTiming> even = {{1.0, 2.0, 0.0, 0.0, "cpu[0]"}, {1.0, 2.0, 0.0, 0.0, "cpu[1]"}};
  even[0].alone_ratio = even[1].alone_ratio = 0.5;
  simulate_with_neighbours(make_schedule(ScheduleKind::named("1f1b"), 2, 32), even, {TransferTiming{}}, 1, {true, true},
                           &replayed);
  CHECK(replayed[0].forward_seconds > 0.95);
  CHECK(replayed[0].forward_seconds < 1.0);
  std::vector<StageTiming> laned = equal_stages(1, 1.0, 2.0);
  laned[0].lanes = 2;
  laned[0].alone_ratio = 0.5;
  simulate_with_neighbours(make_schedule(ScheduleKind::named("1f1b"), 1, 8, 2), laned, {}, 1, {true}, &replayed);
  CHECK(replayed[0].forward_seconds == 1.0);

  const ModelConfig model = small_model(4);
  PlanOptions base;
  base.micro_batch_size = 2;
  HardwareSpec hw = with_measured_times(model, 2);
  hw.measured.entries[0].alone_ratio = 0.7;  // the 1-core entry
  const ModelDesc desc = describe_model(model);
  const PlannerResult p = plan_auto(desc, hw, base, PlannerChoices{});
  REQUIRE(!p.plans.empty());
  CHECK(p.plans.front().predicted.step_seconds / p.plans.front().options.micro_batches ==
        doctest::Approx(brute_force_best(desc, hw, base, PlannerChoices{})).epsilon(1e-12));
}

// A streamed stage's window is the planner's to size. Streaming a model whose embedding and head
// are far heavier than a block, a window of two starts loading the embedding in backward only once
// the block before it is done, and the GPU waits; a deeper window loads it earlier (simulated:
// 73.6, 71.5, 70.4 and 69.4 ms a step for windows of 1 to 4 layers). The planner takes the fastest window, the
// smallest among equals (less GPU memory).
TEST_CASE("the planner sizes a streamed stage's window") {
  ModelConfig config = small_model(6);
  config.vocab_size = 32768;
  config.seq_len = 128;
  const ModelDesc model = describe_model(config);
  HardwareSpec hw = cpu_gpu_box(16 * kGiB, 4 * kGiB);
  hw.links = {{kCpu, kGpu, 2e9, 10e-6}, {kGpu, kCpu, 2e9, 10e-6}};
  PlanOptions base;
  base.micro_batch_size = 2;
  PlannerChoices streamed;
  streamed.shapes = {{kGpu}};
  streamed.weights_streamed = {true};
  streamed.micro_batch_counts = {16};
  std::map<int, double> seconds;  // window -> step time
  for (int window : {1, 2, 3, 4}) {
    streamed.window_layers = {window};
    const PlannerResult r = plan_auto(model, hw, base, streamed);
    REQUIRE(!r.plans.empty());
    CHECK(r.plans.front().layers.front().streamed());
    CHECK(r.plans.front().options.window_layers == window);
    seconds[window] = r.plans.front().predicted.step_seconds;
  }
  streamed.window_layers = {};
  const PlannerResult chosen = plan_auto(model, hw, base, streamed);
  REQUIRE(!chosen.plans.empty());
  const int window = chosen.plans.front().options.window_layers;
  CAPTURE(window);
  CHECK(window > 2);
  CHECK(seconds[window] < seconds[2] * 0.98);
  CHECK(chosen.plans.front().predicted.step_seconds == doctest::Approx(seconds[window]).epsilon(1e-12));
  for (const auto& [w, t] : seconds) CHECK((t > seconds[window] || w >= window));
}

// Replicas: each stage's gradient sum starts when its last backward ends, the last stage first, on
// its host's network; the gradient norm waits for every sum. GPipe, S = 2, M = 2, f = b = 1: stage 1's
// backwards end at 4 and 5, stage 0's at 5 and 6.
TEST_CASE("the replicas' gradient sums start as each stage's backward ends, and the norm waits") {
  std::vector<StageTiming> stages = equal_stages(2, 1.0, 1.0);
  stages[0].sum_seconds = 1.0;
  stages[1].sum_seconds = 2.0;
  stages[0].norm_seconds = stages[1].norm_seconds = 0.5;
  stages[0].sum_resource = stages[1].sum_resource = "gradient sums";
  const Schedule gpipe = make_schedule(ScheduleKind::named("gpipe"), 2, 2);
  SimResult r = simulate(gpipe, stages, {TransferTiming{}}, 1);
  CHECK(r.pipeline_seconds == doctest::Approx(6.0));
  // Stage 1's sum 5..7, then stage 0's on the same network 7..8; the norms 8..9.
  std::vector<std::pair<double, double>> sums;
  for (const SimEvent& e : r.events) {
    if (e.kind == EventKind::kGradientSum) sums.emplace_back(e.start, e.end);
  }
  CHECK(sums == std::vector<std::pair<double, double>>{{5.0, 7.0}, {7.0, 8.0}});
  CHECK(r.step_seconds == doctest::Approx(9.0));
  // On two hosts' networks the sums overlap: stage 0's runs 6..7, the norms start at 7.
  stages[0].sum_resource = "gradient sums@host1";
  r = simulate(gpipe, stages, {TransferTiming{}}, 1);
  CHECK(r.step_seconds == doctest::Approx(8.0));
}

// Copies between hosts cost bytes over the network's bandwidth plus its latency, on a resource per
// direction; a replica's sum is a ring all-reduce of its float32 gradients plus gathering them; a
// hardware without a network charges the network nothing.
TEST_CASE("the cost model charges the network: copies between hosts and the replicas' sums") {
  const ModelConfig model = small_model(4);
  HardwareSpec hw = cpu_only_box(2);
  hw.network = {1e9, 100e-6};
  CHECK(network_seconds(hw, 2e6) == doctest::Approx(2e-3 + 100e-6));
  const int64_t params = range_param_count(model, 0, 2);
  CHECK(params == embed_param_count(model) + 2 * block_param_count(model));
  const double bytes = 4.0 * static_cast<double>(params);
  CHECK(replica_sum_seconds(hw, params, 3) ==
        doctest::Approx(4.0 * bytes / 20e9 + 2.0 * 2.0 / 3.0 * bytes / 1e9 + 4.0 * 100e-6));
  CHECK(replica_sum_seconds(hw, params, 1) == 0.0);

  StageMap map = make_stage_map({kCpu, kCpu}, {2, 5});
  map.stages[1].host = 1;
  PlanOptions o;
  o.micro_batch_size = 2;
  o.replicas = 3;
  const std::vector<TransferTiming> t = transfer_timings({64 * 4, 64 * 4}, model, hw, map, o);
  REQUIRE(t.size() == 1);
  CHECK(t[0].forward_resource == "host0->host1");
  CHECK(t[0].backward_resource == "host1->host0");
  CHECK(t[0].forward_seconds == doctest::Approx(2.0 * 32 * 256 / 1e9 + 100e-6));
  const std::vector<StageTiming> st = stage_timings(model, hw, map, o);
  CHECK(st[0].sum_seconds == doctest::Approx(replica_sum_seconds(hw, params, 3)));
  CHECK(st[0].sum_resource == "gradient sums");
  CHECK(st[1].sum_resource == "gradient sums@host1");
  CHECK(st[1].resource == "cpu@host1");
  // A stage that shares its host's pool has every core its host's other stages do not own.
  map.stages[0].cores = 2;
  const std::vector<StageTiming> owned = stage_timings(model, hw, map, o);
  CHECK(std::isfinite(owned[1].forward_seconds));
  CHECK(owned[1].forward_seconds == doctest::Approx(st[1].forward_seconds));
  hw.network = {};
  CHECK(transfer_timings({64 * 4, 64 * 4}, model, hw, map, o)[0].forward_seconds == 0.0);
}

// Each host is a machine of the hardware: its stages' cores are numbered from 0 on it, and its
// shared pool is its own resource.
TEST_CASE("assign_cores: each host's cores are its own") {
  const HardwareSpec hw = cpu_only_box(2);
  StageMap map = make_stage_map({kCpu, kCpu, kCpu}, {1, 3, 5}, {2, 0, 0});
  map.stages[1].host = map.stages[2].host = 1;
  const CoreAssignment cores = assign_cores(map, hw);
  REQUIRE(cores.groups.size() == 2);
  CHECK(cores.groups[0].cpus == std::vector<int>{0, 1});
  CHECK(cores.groups[1].resource == "cpu@host1");
  CHECK(cores.groups[1].cpus == std::vector<int>{0, 1});
  CHECK(cores.groups[1].stages == std::vector<int>{1, 2});
}
