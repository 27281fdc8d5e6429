// memory/: the stage map's validation, the per-stage memory estimate, and its overflow checks.
#include <doctest/doctest.h>

#include "memory/errors.h"
#include "memory/estimate.h"
#include "memory/param_count.h"
#include "planner_fixtures.h"
#include "scheduler/plan.h"
#include "scheduler/schedule.h"

using namespace pipetrain;
using namespace pipetrain::testing;

namespace {

// The estimate for the micro-batches the options' schedule holds (its op lists).
MemoryEstimate estimate(const ModelDesc& model, const HardwareSpec& hw, const StageMap& map, const PlanOptions& o) {
  return estimate_memory(model, hw, map, make_schedule(o.schedule, map.num_stages(), o.micro_batches).in_flight(), o);
}

const ScheduleKind kGPipe = ScheduleKind::named("gpipe");
const ScheduleKind kOneFOneB = ScheduleKind::named("1f1b");

}  // namespace

// Layer references: embed, head, and block indices; out-of-range blocks are named.
TEST_CASE("layer references") {
  const ModelConfig m = small_model(4);
  CHECK(parse_layer_ref("embed", m) == 0);
  CHECK(parse_layer_ref("0", m) == 1);
  CHECK(parse_layer_ref("3", m) == 4);
  CHECK(parse_layer_ref("head", m) == 5);
  CHECK_THROWS_WITH_AS(parse_layer_ref("4", m), doctest::Contains("block 4 does not exist"), InputError);
  CHECK_THROWS_WITH_AS(parse_layer_ref("-1", m), doctest::Contains("'-1'"), InputError);
  CHECK_THROWS_WITH_AS(parse_layer_ref("tail", m), doctest::Contains("'tail'"), InputError);
}

// Every malformed stage map is refused with the layers named.
TEST_CASE("stage map validation names the layers") {
  const ModelConfig m = small_model(4);  // layers: embed, block 0..3, head
  const HardwareSpec hw = cpu_gpu_box();
  auto check = [&](const StageMap& map, const char* message) {
    CHECK_THROWS_WITH_AS(validate_stage_map(map, m, hw), doctest::Contains(message), InputError);
  };
  validate_stage_map(make_stage_map({kCpu, kGpu, kCpu}, {1, 3, 5}), m, hw);
  check(make_stage_map({kCpu, kCpu}, {1, 3}), "covers embed..block 2 but the model also has block 3..head");
  check(StageMap{{{kCpu, 0, 1, 0, {}, {}}, {kCpu, 3, 5, 0, {}, {}}}}, "gap: block 1 belong to no stage");
  check(StageMap{{{kCpu, 0, 2, 0, {}, {}}, {kCpu, 2, 5, 0, {}, {}}}}, "overlaps: block 1 are in stage 1");
  check(StageMap{{{kCpu, 0, 2, 0, {}, {}}, {kCpu, 4, 3, 0, {}, {}}}}, "stage 1 is reversed");
  check(make_stage_map({kCpu, DeviceId::cuda(1)}, {2, 5}), "stage 1 names device 'cuda:1'");
  check(make_stage_map({kCpu, kCpu}, {2, 5}, {3, 3}), "gives cpu stages 6 cores; hardware 'test-box' has 4");
  check(make_stage_map({kGpu, kCpu}, {2, 5}, {1, 1}), "gives cores to a cuda:0 stage");
  check(StageMap{}, "no stages");
  // Three placements: resident (the optimizer on the GPU or in RAM), streamed (weights and
  // optimizer in RAM, computing on a GPU) and cpu; every other home is refused by name.
  StageMap homes = make_stage_map({kCpu, kGpu, kCpu}, {1, 3, 5});
  homes.stages[0].optimizer = kGpu;
  check(homes, "stage 0 keeps its optimizer state on cuda:0 but computes on cpu");
  homes.stages[0].optimizer.reset();
  homes.stages[1].optimizer = kCpu;  // a GPU stage's optimizer in RAM: allowed
  validate_stage_map(homes, m, hw);
  homes.stages[1].optimizer.reset();
  homes.stages[1].weights = kCpu;
  check(homes, "stage 1 streams its weights from cpu RAM but keeps its optimizer on cuda:0");
  homes.stages[1].optimizer = kCpu;  // streamed
  validate_stage_map(homes, m, hw);
  CHECK(homes.stages[1].placement().streamed());
  CHECK_FALSE(homes.stages[0].placement().streamed());
  homes.stages[0].weights = kGpu;
  check(homes, "stage 0 keeps its weights on cuda:0 but computes on cpu; weights are streamed only from cpu RAM");
  homes.stages[0].weights.reset();
  homes.stages[1].weights = kGpu;  // stated, and the same as the compute device: fine
  validate_stage_map(homes, m, hw);
  // Lanes split a cpu stage's cores (its own, or a pool it has alone) into equal shares, and divide
  // the largest lane count (micro-batches move in groups of it).
  validate_stage_map(make_stage_map({kCpu, kCpu}, {2, 5}, {2, 2}, {2, 1}), m, hw);
  validate_stage_map(make_stage_map({kCpu}, {5}, {}, {4}), m, hw);
  check(make_stage_map({kCpu, kGpu}, {2, 5}, {}, {1, 2}), "gives lanes to a cuda:0 stage");
  check(make_stage_map({kCpu, kCpu}, {2, 5}, {3, 1}, {2, 1}), "lanes = 2 on cores = 3; each lane gets an equal share");
  check(make_stage_map({kCpu, kCpu}, {2, 5}, {}, {2, 1}), "shares its cores with 1 other cpu stage(s)");
  check(make_stage_map({kCpu}, {5}, {}, {3}), "lanes = 3 on the 4 cores no stage owns");
  check(make_stage_map({kCpu, kCpu}, {2, 5}, {2, 2}, {2, 0}), "stage 1 has lanes = 0; must be >= 1");
  validate_stage_map(make_stage_map({kCpu, kCpu, kCpu}, {1, 2, 5}, {1, 1, 2}, {1, 1, 2}), m, hw);
  const HardwareSpec eight = cpu_only_box(8);
  CHECK_THROWS_WITH_AS(validate_stage_map(make_stage_map({kCpu, kCpu}, {2, 5}, {2, 6}, {2, 3}), m, eight),
                       doctest::Contains("stage 0 has lanes = 2, which does not divide another stage's 3"), InputError);
}

// A streamed stage holds on its GPU a window of window_layers layers' weights and two layers'
// gradients, whatever its depth; in RAM its float32 masters, its moments and, unless each layer
// steps as its gradient arrives, its 16-bit gradients; pinned, two slots each way.
TEST_CASE("a streamed stage's memory") {
  const ModelConfig m = small_model(4);
  const HardwareSpec hw = cpu_gpu_box();
  StageMap map = make_stage_map({kCpu, kGpu, kCpu}, {1, 4, 5});
  map.stages[1].weights = kCpu;
  map.stages[1].optimizer = kCpu;
  PlanOptions o;
  o.schedule = ScheduleKind::named("layer-major");
  o.micro_batches = 4;
  o.precision.cuda = Dtype::kFloat16;
  const int64_t block = block_param_count(m);  // stage 1 holds blocks 1..3: the largest layer is a block
  const int64_t p1 = 3 * block;
  const MemoryEstimate e = estimate(describe_model(m), hw, map, o);
  const StageMemory& st = e.stages[1];
  CHECK(st.in_flight == 4);  // layer-major holds every micro-batch
  CHECK(st.weights == 2 * block * 2);
  CHECK(st.grads == 2 * block * 2);
  CHECK(st.host_grads == p1 * 4);  // float32, as the masters' gradients
  CHECK(st.master == p1 * 4);
  CHECK(st.optimizer == p1 * 8);
  CHECK(st.buffers == 4 * block * 2);  // 2 slots in, 2 out; its boundaries' rings are the CPU stages'
  // RAM holds the masters, moments, gradients and the pinned slots (the box has no slack).
  CHECK(st.on_optimizer_home == st.master + st.optimizer + st.host_grads + st.buffers);
  CHECK(st.on_device == st.weights + st.grads + st.activations);
  const std::string table = format_memory_table(e, m, map);
  CHECK(table.find("weights                         resident          streamed          resident") != std::string::npos);
  CHECK(table.find("gradients in RAM") != std::string::npos);
  // A deeper window holds more; stepping per layer keeps no gradients in RAM.
  o.window_layers = 3;
  o.layerwise_update = true;
  const MemoryEstimate wider = estimate(describe_model(m), hw, map, o);
  CHECK(wider.stages[1].weights == 3 * block * 2);
  CHECK(wider.stages[1].host_grads == 0);
  CHECK(wider.devices[0].need_bytes == e.devices[0].need_bytes - p1 * 4);
  // The same stage resident holds all its weights and gradients on the GPU.
  map.stages[1].weights.reset();
  const MemoryEstimate resident = estimate(describe_model(m), hw, map, o);
  CHECK(resident.stages[1].weights == p1 * 2);
  CHECK(resident.stages[1].host_grads == 0);
}

// Weights, gradients and optimizer state are exact: params x bytes.
TEST_CASE("weights, gradients and optimizer bytes are exact") {
  const ModelConfig m = small_model(4);
  const HardwareSpec hw = cpu_gpu_box();
  const StageMap map = make_stage_map({kCpu, kGpu, kCpu}, {1, 3, 5});
  PlanOptions o;
  o.optimizer.kind = OptimizerKind::adamw();
  const MemoryEstimate e = estimate(describe_model(m), hw, map, o);
  const int64_t p0 = embed_param_count(m) + block_param_count(m);
  const int64_t p1 = 2 * block_param_count(m);
  const int64_t p2 = block_param_count(m) + head_param_count(m);
  CHECK(e.stages[0].weights == 4 * p0);
  CHECK(e.stages[1].weights == 4 * p1);
  CHECK(e.stages[2].grads == 4 * p2);
  CHECK(e.stages[0].optimizer == 8 * p0);
  o.optimizer.kind = OptimizerKind::sgd();
  CHECK(estimate(describe_model(m), hw, map, o).stages[1].optimizer == 0);
  o.optimizer.momentum = 0.9;
  CHECK(estimate(describe_model(m), hw, map, o).stages[1].optimizer == 4 * p1);
}

// A stage with lanes keeps a set of gradients per lane and runs an op per lane at once (their
// transient activations too); what it holds between forward and backward is its op list's.
TEST_CASE("a stage with lanes: gradients and running activations per lane") {
  const ModelConfig m = small_model(4);
  const ModelDesc desc = describe_model(m);
  const HardwareSpec hw = cpu_only_box(4);
  PlanOptions o;
  o.micro_batches = 4;
  const MemoryEstimate one = estimate(desc, hw, make_stage_map({kCpu}, {5}), o);
  const StageMap laned = make_stage_map({kCpu}, {5}, {}, {2});
  const MemoryEstimate two = estimate_memory(desc, hw, laned, make_schedule(o.schedule, 1, 4, 2).in_flight(), o);
  const RangeCosts r = LayerPrefix(desc).range(0, 5);
  const int64_t tokens = o.micro_batch_size * m.seq_len;
  CHECK(two.stages[0].grads == 2 * one.stages[0].grads);
  CHECK(two.stages[0].weights == one.stages[0].weights);
  CHECK(one.stages[0].in_flight == 1);
  CHECK(two.stages[0].in_flight == 2);
  CHECK(two.stages[0].activations ==
        2 * tokens * r.saved_bytes_per_token + 2 * tokens * r.max_transient_bytes_per_token + r.max_transient_bytes_fixed);
}

// Activations follow the schedule: GPipe holds M micro-batches, 1F1B min(M, S - s); checkpointing
// holds each layer's input per micro-batch in flight, plus the one layer being recomputed.
TEST_CASE("activations by schedule and checkpointing") {
  const ModelConfig m = small_model(6);
  const ModelDesc desc = describe_model(m);
  const HardwareSpec hw = cpu_only_box(4);
  const StageMap map = make_stage_map({kCpu, kCpu, kCpu}, {2, 5, 7});
  PlanOptions o;
  o.micro_batches = 8;
  o.micro_batch_size = 2;
  const int64_t tokens = 2 * 32;
  o.schedule = kGPipe;
  const MemoryEstimate gpipe = estimate(desc, hw, map, o);
  o.schedule = kOneFOneB;
  const MemoryEstimate one_f = estimate(desc, hw, map, o);
  const LayerPrefix prefix(desc);
  for (int s = 0; s < 3; ++s) {
    const RangeCosts r = prefix.range(map.stages[s].first, map.stages[s].last);
    CHECK(gpipe.stages[s].in_flight == 8);
    CHECK(one_f.stages[s].in_flight == 3 - s);
    const int64_t transient = tokens * r.max_transient_bytes_per_token + r.max_transient_bytes_fixed;
    CHECK(gpipe.stages[s].activations == 8 * tokens * r.saved_bytes_per_token + transient);
    CHECK(one_f.stages[s].activations == (3 - s) * tokens * r.saved_bytes_per_token + transient);
  }
  o.checkpointing = true;
  const MemoryEstimate ckpt = estimate(desc, hw, map, o);
  for (int s = 0; s < 3; ++s) CHECK(ckpt.stages[s].activations < one_f.stages[s].activations);
  const RangeCosts r1 = prefix.range(3, 5);
  CHECK(ckpt.stages[1].activations ==
        2 * tokens * r1.input_bytes_per_token_sum + tokens * r1.max_layer_bytes_per_token + r1.max_transient_bytes_fixed);
}

// A plan's estimate holds the micro-batches its schedule's op lists hold (the executor runs the
// same lists): GPipe all M, 1F1B min(M, S - s).
TEST_CASE("a plan's in-flight counts are its op lists'") {
  const ModelConfig m = small_model(6);
  const ModelDesc desc = describe_model(m);
  const HardwareSpec hw = cpu_only_box(4);
  for (ScheduleKind kind : {kGPipe, kOneFOneB}) {
    for (int stages = 1; stages <= 5; ++stages) {
      for (int micro = 1; micro <= 10; ++micro) {
        PlanOptions o;
        o.schedule = kind;
        o.micro_batches = micro;
        std::vector<int64_t> last;
        for (int s = 0; s < stages; ++s) last.push_back(s + 1 == stages ? head_layer(m) : s);
        const Plan plan = evaluate_plan(desc, hw, make_stage_map(std::vector<DeviceId>(stages, kCpu), last), o);
        for (int st = 0; st < stages; ++st) {
          CAPTURE(kind.name());
          CAPTURE(stages);
          CAPTURE(micro);
          CHECK(plan.memory.stages[st].in_flight == max_in_flight(plan.schedule.stages[st]));
          CHECK(plan.memory.stages[st].in_flight == (kind == kGPipe ? micro : std::min(micro, stages - st)));
        }
      }
    }
  }
}

// Pinned rings sit only on the host side of a CPU-GPU boundary: ring_slots for the direction the
// CPU stage sends, in_flight + 1 for the one it receives; device totals add every stage on the
// device plus its reserve.
TEST_CASE("pinned buffers and device totals") {
  const ModelConfig m = small_model(4);
  HardwareSpec hw = cpu_gpu_box();
  hw.devices[0].reserved_bytes = 1000;
  const StageMap map = make_stage_map({kCpu, kGpu, kCpu}, {1, 3, 5});
  PlanOptions o;
  o.micro_batch_size = 2;
  o.ring_slots = 3;
  const MemoryEstimate e = estimate(describe_model(m), hw, map, o);
  const int64_t boundary = 2 * 32 * 64 * 4;  // tokens x hidden x float32
  // 1F1B, M = 8, S = 3: stage 0 keeps min(8, 3) = 3 micro-batches in flight, stage 2 keeps 1.
  CHECK(e.stages[0].buffers == (3 + 3 + 1) * boundary);
  CHECK(e.stages[1].buffers == 0);
  CHECK(e.stages[2].buffers == (3 + 1 + 1) * boundary);
  CHECK(e.pinned_need_bytes == 12 * boundary);
  CHECK(e.devices[0].need_bytes == 1000 + e.stages[0].total + e.stages[2].total);
  CHECK(e.devices[1].need_bytes == e.stages[1].total);
  CHECK(e.fits);
  // The rings as the runtime allocates them: into the GPU ring_slots; out of it the receiving CPU
  // stage's in-flight + 1; held by the CPU side of each boundary.
  REQUIRE(e.rings.size() == 2);
  CHECK(e.rings[0].host_stage == 0);
  CHECK(e.rings[0].forward_slots == 3);
  CHECK(e.rings[0].backward_slots == 3 + 1);
  CHECK(e.rings[1].host_stage == 2);
  CHECK(e.rings[1].forward_slots == 1 + 1);
  CHECK(e.rings[1].backward_slots == 3);
  CHECK(e.rings[0].slot_bytes == boundary);
  // Between two CPU stages there is nothing to stage.
  const MemoryEstimate cpu_only = estimate(describe_model(m), cpu_only_box(4), make_stage_map({kCpu, kCpu}, {2, 5}), o);
  CHECK_FALSE(cpu_only.rings[0].staged);
  CHECK(cpu_only.pinned_need_bytes == 0);
}

// A budget smaller than the need is reported as not fitting, per device.
TEST_CASE("verdicts against budgets") {
  const ModelConfig m = small_model(4);
  const StageMap map = make_stage_map({kCpu, kGpu, kCpu}, {1, 3, 5});
  const HardwareSpec tiny_gpu = cpu_gpu_box(16 * kGiB, 1024 * 1024);
  const MemoryEstimate e = estimate(describe_model(m), tiny_gpu, map, PlanOptions{});
  CHECK(e.devices[0].fits);
  CHECK(!e.devices[1].fits);
  CHECK(!e.fits);
  const std::string table = format_memory_table(e, m, map);
  CHECK(table.find("DOES NOT FIT") != std::string::npos);
  CHECK(table.find("embed..block 0") != std::string::npos);
}

// Sizes that would overflow 64-bit arithmetic are refused, not wrapped.
TEST_CASE("overflow is an input error") {
  ModelConfig m = small_model(1);
  m.hidden_dim = 1 << 20;
  m.seq_len = 1 << 20;
  m.num_heads = 1 << 20;
  const HardwareSpec hw = cpu_only_box();
  PlanOptions o;
  o.micro_batch_size = 1LL << 40;
  CHECK_THROWS_WITH_AS(estimate(describe_model(m), hw, make_stage_map({kCpu}, {2}), o),
                       doctest::Contains("overflows 64 bits"), InputError);
}

// Stages on two hosts: each host's devices have their own need and budget; a boundary between
// hosts holds one tensor each way on both, and replicas hold a float32 copy of each stage's
// gradients for their sum.
TEST_CASE("stages on several hosts: each host's devices, and the network's buffers") {
  const ModelConfig m = small_model(4);
  const HardwareSpec hw = cpu_only_box(2);
  StageMap map = make_stage_map({kCpu, kCpu}, {2, 5}, {2, 2});  // each owns all of its host's cores
  map.stages[1].host = 1;
  validate_stage_map(map, m, hw);
  PlanOptions o;
  o.micro_batch_size = 2;
  o.replicas = 2;
  const MemoryEstimate e = estimate(describe_model(m), hw, map, o);
  const int64_t boundary = 2 * 32 * 64 * 4;  // tokens x hidden x float32
  CHECK(e.stages[0].network == 4 * (embed_param_count(m) + 2 * block_param_count(m)) + 2 * boundary);
  CHECK(e.stages[1].network == 4 * (2 * block_param_count(m) + head_param_count(m)) + 2 * boundary);
  REQUIRE(e.devices.size() == 2);
  CHECK(e.devices[0].name() == "cpu@host0");
  CHECK(e.devices[1].name() == "cpu@host1");
  CHECK(e.devices[0].need_bytes == e.stages[0].total);
  CHECK(e.devices[1].need_bytes == e.stages[1].total);
  CHECK(format_memory_table(e, m, map).find("network buffers") != std::string::npos);
  // Hosts are numbered without gaps.
  map.stages[1].host = 2;
  CHECK_THROWS_WITH_AS(validate_stage_map(map, m, hw), doctest::Contains("names host 2 but no stage runs on host 1"), InputError);
  // On one host the same cores would be counted twice.
  map.stages[1].host = 0;
  CHECK_THROWS_WITH_AS(validate_stage_map(map, m, hw), doctest::Contains("gives cpu stages 4 cores; hardware 'test-box' has 2"),
                       InputError);
}
