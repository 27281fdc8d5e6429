// scheduler/: GPipe and 1F1B as per-stage op lists, compared with tables written out by hand.
#include <doctest/doctest.h>

#include <algorithm>

#include "memory/errors.h"
#include "planner_fixtures.h"
#include "scheduler/bench_splits.h"
#include "scheduler/schedule.h"
#include "scheduler/splits.h"
#include "scheduler/statistics.h"

using namespace pipetrain;

namespace {
const ScheduleKind kGPipe = ScheduleKind::named("gpipe");
const ScheduleKind kOneFOneB = ScheduleKind::named("1f1b");
}  // namespace

// Layer-major, S=2, M=3: every stage's op list is GPipe's (a streamed stage runs each half layer by
// layer, which the simulator replays as blocks).
TEST_CASE("layer-major table for S=2, M=3") {
  const Schedule s = make_schedule(ScheduleKind::named("layer-major"), 2, 3);
  for (int stage = 0; stage < 2; ++stage) CHECK(format_ops(s.stages[stage]) == "F0 F1 F2 B0 B1 B2");
  CHECK(s.in_flight() == std::vector<int>{3, 3});
  CHECK(ScheduleKind::named("layer-major").label() == "layer-major");
}

// GPipe, S=3, M=4: every stage runs all forwards, then all backwards.
TEST_CASE("GPipe table for S=3, M=4") {
  const Schedule s = make_schedule(kGPipe, 3, 4);
  REQUIRE(s.stages.size() == 3);
  for (int stage = 0; stage < 3; ++stage) {
    CHECK(format_ops(s.stages[stage]) == "F0 F1 F2 F3 B0 B1 B2 B3");
    CHECK(max_in_flight(s.stages[stage]) == 4);
  }
  CHECK(s.in_flight() == std::vector<int>{4, 4, 4});
}

// 1F1B, S=3, M=4: the table drawn in schedule.h.
TEST_CASE("1F1B table for S=3, M=4") {
  const Schedule s = make_schedule(kOneFOneB, 3, 4);
  CHECK(format_ops(s.stages[0]) == "F0 F1 F2 B0 F3 B1 B2 B3");
  CHECK(format_ops(s.stages[1]) == "F0 F1 B0 F2 B1 F3 B2 B3");
  CHECK(format_ops(s.stages[2]) == "F0 B0 F1 B1 F2 B2 F3 B3");
  CHECK(s.in_flight() == std::vector<int>{3, 2, 1});
}

// 1F1B with fewer micro-batches than stages: warm-up is capped at M.
TEST_CASE("1F1B table for S=4, M=2") {
  const Schedule s = make_schedule(kOneFOneB, 4, 2);
  CHECK(format_ops(s.stages[0]) == "F0 F1 B0 B1");
  CHECK(format_ops(s.stages[1]) == "F0 F1 B0 B1");
  CHECK(format_ops(s.stages[2]) == "F0 F1 B0 B1");
  CHECK(format_ops(s.stages[3]) == "F0 B0 F1 B1");
}

// Every schedule runs each micro-batch's forward once and its backward once, forward first, and
// 1F1B keeps at most min(M, S - s) micro-batches in flight on stage s.
TEST_CASE("schedules are complete and respect their in-flight limits") {
  for (ScheduleKind kind : {kGPipe, kOneFOneB}) {
    for (int stages = 1; stages <= 5; ++stages) {
      for (int m = 1; m <= 9; ++m) {
        const Schedule s = make_schedule(kind, stages, m);
        for (int stage = 0; stage < stages; ++stage) {
          const auto& ops = s.stages[stage];
          REQUIRE(ops.size() == static_cast<size_t>(2 * m));
          for (int k = 0; k < m; ++k) {
            const auto f = std::find(ops.begin(), ops.end(), Op{OpKind::kForward, k});
            const auto b = std::find(ops.begin(), ops.end(), Op{OpKind::kBackward, k});
            CHECK(f != ops.end());
            CHECK(b != ops.end());
            CHECK(f < b);
          }
          const int limit = kind == kGPipe ? m : std::min(m, stages - stage);
          CHECK_MESSAGE(max_in_flight(ops) == limit, kind.name() << " S=" << stages << " M=" << m
                                                                               << " stage " << stage);
        }
      }
    }
  }
}

// Micro-batches in groups (a stage with lanes computes a group's at once): each op on a group
// becomes its micro-batches' ops in order; the last group may be smaller; in-flight counts grow by
// the group; and a stage's backwards stay in micro-batch order, which lanes sum gradients in.
TEST_CASE("schedules over groups of micro-batches") {
  CHECK(format_ops(make_schedule(kOneFOneB, 1, 6, 2).stages[0]) == "F0 F1 B0 B1 F2 F3 B2 B3 F4 F5 B4 B5");
  CHECK(format_ops(make_schedule(kOneFOneB, 1, 5, 2).stages[0]) == "F0 F1 B0 B1 F2 F3 B2 B3 F4 B4");
  const Schedule two = make_schedule(kOneFOneB, 2, 6, 2);
  CHECK(format_ops(two.stages[0]) == "F0 F1 F2 F3 B0 B1 F4 F5 B2 B3 B4 B5");
  CHECK(format_ops(two.stages[1]) == "F0 F1 B0 B1 F2 F3 B2 B3 F4 F5 B4 B5");
  CHECK(two.in_flight() == std::vector<int>{4, 2});
  CHECK(two.group == 2);
  CHECK(make_schedule(kGPipe, 2, 5, 4).stages[1] == make_schedule(kGPipe, 2, 5).stages[1]);
  for (ScheduleKind kind : ScheduleKind::all()) {
    for (int group : {1, 2, 3, 4}) {
      for (int m = 1; m <= 9; ++m) {
        const Schedule s = make_schedule(kind, 3, m, group);
        for (const auto& ops : s.stages) {
          REQUIRE(ops.size() == static_cast<size_t>(2 * m));
          int next_backward = 0;
          for (const Op& op : ops) {
            if (op.kind == OpKind::kBackward) CHECK(op.micro_batch == next_backward++);
          }
        }
      }
    }
  }
  CHECK_THROWS_WITH_AS(make_schedule(kGPipe, 2, 4, 0), doctest::Contains("got 0"), InputError);
}

// Bad schedule requests are InputErrors naming the value; an unknown name lists the registered ones.
TEST_CASE("bad schedule requests") {
  CHECK_THROWS_WITH_AS(make_schedule(kGPipe, 0, 4), doctest::Contains("got 0"), InputError);
  CHECK_THROWS_WITH_AS(make_schedule(kGPipe, 2, -1), doctest::Contains("got -1"), InputError);
  CHECK_THROWS_WITH_AS(ScheduleKind::named("pipedream"), doctest::Contains("'pipedream'; expected one of gpipe, layer-major, 1f1b"),
                       InputError);
  CHECK(ScheduleKind::named("1f1b") == kOneFOneB);
  CHECK(ScheduleKind::named("1f1b").label() == "1F1B");
}

// The registry lists every file of scheduler/schedules/, in file-name order, by the names configs use.
TEST_CASE("registered schedules") {
  std::vector<std::string> names;
  for (ScheduleKind k : ScheduleKind::all()) names.push_back(k.name());
  CHECK(names == std::vector<std::string>{"gpipe", "layer-major", "1f1b"});
}

// pipetrain bench's split enumeration: every boundary of every shape, each core split; capped
// evenly; the naive version of a split shares all cores.
TEST_CASE("bench enumerates every split, and caps evenly") {
  ModelConfig model;
  model.num_layers = 2;  // layers embed, 0, 1, head
  model.hidden_dim = 64;
  model.num_heads = 4;
  model.intermediate_size = 256;
  model.seq_len = 32;
  const HardwareSpec hw = testing::cpu_only_box(2);
  const DeviceId cpu = DeviceId::cpu();
  const SplitList all = every_split(model, hw, {{cpu}, {cpu, cpu}}, 0);
  // 2 one-stage splits (both cores, or one lane per core); 3 boundaries x (shared, 1+1 cores)
  // two-stage splits.
  REQUIRE(all.total == 8);
  REQUIRE(all.maps.size() == 8);
  CHECK(split_label(model, all.maps[0]) == "cpu embed..head");
  CHECK(split_label(model, all.maps[1]) == "cpu(2 lanes) embed..head");
  CHECK(split_label(model, all.maps[2]) == "cpu embed | cpu block 0..head");
  CHECK(split_label(model, all.maps[3]) == "cpu[1c] embed | cpu[1c] block 0..head");
  CHECK(split_label(model, all.maps[7]) == "cpu[1c] embed..block 1 | cpu[1c] head");
  const SplitList capped = every_split(model, hw, {{cpu}, {cpu, cpu}}, 3);
  CHECK(capped.total == 8);
  REQUIRE(capped.maps.size() == 3);
  CHECK(split_label(model, capped.maps[0]) == split_label(model, all.maps[0]));
  CHECK(split_label(model, capped.maps[1]) == split_label(model, all.maps[3]));
  CHECK(split_label(model, capped.maps[2]) == split_label(model, all.maps[7]));
  CHECK(split_label(model, naive_version(all.maps[1])) == "cpu embed..head");
  CHECK(split_label(model, naive_version(all.maps[3])) == "cpu embed | cpu block 0..head");
}

// Bench statistics: warm-up steps are left out, then the median; nothing left is an error.
TEST_CASE("bench statistics exclude warm-up and take the median") {
  const StepStats s = summarize_steps({5.0, 0.5, 0.3, 0.4, 9.0}, 1000, 1);
  CHECK(s.measured == 4);
  CHECK(s.median_step_seconds == doctest::Approx(0.45));  // of 0.3 0.4 0.5 9.0
  CHECK(s.median_tokens_per_s == doctest::Approx(1000 / 0.45));
  CHECK(summarize_steps({2.0, 1.0, 3.0}, 10, 0).median_step_seconds == 2.0);
  CHECK_THROWS_AS(summarize_steps({1.0, 2.0}, 10, 2), std::invalid_argument);
  CHECK_THROWS_AS(summarize_steps({}, 10, 0), std::invalid_argument);
}

// The one enumeration of cuts: every way to cut L layers into S non-empty contiguous stages, in
// order; a stride keeps every stride-th choice per boundary; more stages than layers gives none.
TEST_CASE("every cut of the layer list") {
  std::vector<std::vector<int64_t>> cuts;
  for_each_cut(4, 2, 1, [&](const std::vector<int64_t>& last) { cuts.push_back(last); });
  CHECK(cuts == std::vector<std::vector<int64_t>>{{0, 3}, {1, 3}, {2, 3}});
  cuts.clear();
  for_each_cut(5, 3, 1, [&](const std::vector<int64_t>& last) { cuts.push_back(last); });
  CHECK(cuts.size() == 6);  // C(4, 2)
  CHECK(cuts.front() == std::vector<int64_t>{0, 1, 4});
  CHECK(cuts.back() == std::vector<int64_t>{2, 3, 4});
  cuts.clear();
  for_each_cut(6, 2, 2, [&](const std::vector<int64_t>& last) { cuts.push_back(last); });
  CHECK(cuts == std::vector<std::vector<int64_t>>{{0, 5}, {2, 5}, {4, 5}});
  int calls = 0;
  for_each_cut(2, 3, 1, [&](const std::vector<int64_t>&) { ++calls; });
  CHECK(calls == 0);
}

// The median of measured times: the middle value, or the mean of the two middle ones.
TEST_CASE("median") {
  CHECK(median({3.0, 1.0, 2.0}) == 2.0);
  CHECK(median({4.0, 1.0, 3.0, 2.0}) == 2.5);
  CHECK(median({}) == 0.0);
  // Prediction errors: the median and the worst of their magnitudes, and which run was worst.
  const ErrorSummary e = summarise_errors({0.02, -0.263, 0.05, -0.01});
  CHECK(e.median_abs == doctest::Approx(0.035));
  CHECK(e.worst_abs == doctest::Approx(0.263));
  CHECK(e.worst == 1);
  CHECK(summarise_errors({}).worst_abs == 0.0);
}
