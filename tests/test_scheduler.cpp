// scheduler/: GPipe and 1F1B as per-stage op lists, compared with tables written out by hand.
#include <doctest/doctest.h>

#include <algorithm>

#include "memory/errors.h"
#include "scheduler/schedule.h"

using namespace pipetrain;

// GPipe, S=3, M=4: every stage runs all forwards, then all backwards.
TEST_CASE("GPipe table for S=3, M=4") {
  const Schedule s = make_schedule(ScheduleKind::kGPipe, 3, 4);
  REQUIRE(s.stages.size() == 3);
  for (int stage = 0; stage < 3; ++stage) {
    CHECK(format_ops(s.stages[stage]) == "F0 F1 F2 F3 B0 B1 B2 B3");
    CHECK(max_in_flight(s.stages[stage]) == 4);
  }
}

// 1F1B, S=3, M=4: the table drawn in schedule.h.
TEST_CASE("1F1B table for S=3, M=4") {
  const Schedule s = make_schedule(ScheduleKind::kOneFOneB, 3, 4);
  CHECK(format_ops(s.stages[0]) == "F0 F1 F2 B0 F3 B1 B2 B3");
  CHECK(format_ops(s.stages[1]) == "F0 F1 B0 F2 B1 F3 B2 B3");
  CHECK(format_ops(s.stages[2]) == "F0 B0 F1 B1 F2 B2 F3 B3");
}

// 1F1B with fewer micro-batches than stages: warm-up is capped at M.
TEST_CASE("1F1B table for S=4, M=2") {
  const Schedule s = make_schedule(ScheduleKind::kOneFOneB, 4, 2);
  CHECK(format_ops(s.stages[0]) == "F0 F1 B0 B1");
  CHECK(format_ops(s.stages[1]) == "F0 F1 B0 B1");
  CHECK(format_ops(s.stages[2]) == "F0 F1 B0 B1");
  CHECK(format_ops(s.stages[3]) == "F0 B0 F1 B1");
}

// Every schedule runs each micro-batch's forward once and its backward once, forward first, and
// 1F1B keeps at most min(M, S - s) micro-batches in flight on stage s.
TEST_CASE("schedules are complete and respect their in-flight limits") {
  for (ScheduleKind kind : {ScheduleKind::kGPipe, ScheduleKind::kOneFOneB}) {
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
          const int limit = kind == ScheduleKind::kGPipe ? m : std::min(m, stages - stage);
          CHECK_MESSAGE(max_in_flight(ops) == limit, schedule_kind_name(kind) << " S=" << stages << " M=" << m
                                                                               << " stage " << stage);
        }
      }
    }
  }
}

// Bad schedule requests are InputErrors naming the value.
TEST_CASE("bad schedule requests") {
  CHECK_THROWS_WITH_AS(make_schedule(ScheduleKind::kGPipe, 0, 4), doctest::Contains("got 0"), InputError);
  CHECK_THROWS_WITH_AS(make_schedule(ScheduleKind::kGPipe, 2, -1), doctest::Contains("got -1"), InputError);
  CHECK_THROWS_WITH_AS(parse_schedule_kind("pipedream"), doctest::Contains("'pipedream'"), InputError);
  CHECK(parse_schedule_kind("1f1b") == ScheduleKind::kOneFOneB);
}
