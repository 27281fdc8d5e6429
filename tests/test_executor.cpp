// scheduler/executor: the oneTBB flow graph runs a schedule over fake stages (record, sleep, throw).
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>

#include "scheduler/executor.h"
#include "scheduler/timeline.h"

using namespace pipetrain;

namespace {

// Fake stages that record what they ran, in which order, and check the data dependencies as they go.
struct Recorder {
  int num_stages;
  int m;
  std::vector<std::vector<Op>> ran;                 // per stage, in execution order
  std::vector<std::vector<std::atomic<int>>> done;  // [stage][k]: 1 after F, 2 after B
  std::vector<std::atomic<int>> in_flight;
  std::vector<std::atomic<int>> peak_in_flight;
  std::atomic<int> concurrent{0};
  std::atomic<int> peak_concurrent{0};
  std::atomic<int> dependency_errors{0};
  std::chrono::microseconds op_time{0};

  Recorder(int s, int micro_batches)
      : num_stages(s), m(micro_batches), ran(s), done(s), in_flight(s), peak_in_flight(s) {
    for (auto& row : done) row = std::vector<std::atomic<int>>(static_cast<size_t>(m));
  }

  void enter(int stage) {
    const int now = ++concurrent;
    int seen = peak_concurrent.load();
    while (now > seen && !peak_concurrent.compare_exchange_weak(seen, now)) {}
    (void)stage;
  }

  std::vector<StageCallbacks> callbacks() {
    std::vector<StageCallbacks> out;
    for (int s = 0; s < num_stages; ++s) {
      out.push_back({[this, s](int k) {
                       enter(s);
                       if (s > 0 && done[s - 1][k] < 1) ++dependency_errors;  // input came from F(s-1, k)
                       const int f = ++in_flight[s];
                       int seen = peak_in_flight[s].load();
                       while (f > seen && !peak_in_flight[s].compare_exchange_weak(seen, f)) {}
                       std::this_thread::sleep_for(op_time);
                       ran[s].push_back({OpKind::kForward, k});
                       done[s][k] = 1;
                       --concurrent;
                     },
                     [this, s](int k) {
                       enter(s);
                       if (done[s][k] != 1) ++dependency_errors;
                       if (s + 1 < num_stages && done[s + 1][k] != 2) ++dependency_errors;  // gradient from B(s+1, k)
                       std::this_thread::sleep_for(op_time);
                       ran[s].push_back({OpKind::kBackward, k});
                       --in_flight[s];
                       done[s][k] = 2;
                       --concurrent;
                     }});
    }
    return out;
  }
};

std::vector<BoundaryCallbacks> plain_boundaries(int num_stages) {
  return std::vector<BoundaryCallbacks>(static_cast<size_t>(num_stages - 1));
}

}  // namespace

// Each stage runs exactly its op list, in the schedule's order, with inputs that have arrived, and
// never holds more micro-batches in flight than the schedule allows.
TEST_CASE("every stage runs its schedule's op list in order, within its in-flight limit") {
  for (ScheduleKind kind : {ScheduleKind::named("gpipe"), ScheduleKind::named("1f1b")}) {
    for (int s : {1, 2, 3, 4}) {
      for (int m : {1, 4, 8}) {
        CAPTURE(kind.name());
        CAPTURE(s);
        CAPTURE(m);
        const Schedule schedule = make_schedule(kind, s, m);
        Recorder rec(s, m);
        rec.op_time = std::chrono::microseconds(200);
        const ExecutionReport report = run_schedule(schedule, rec.callbacks(), plain_boundaries(s), {});
        CHECK(rec.dependency_errors == 0);
        for (int st = 0; st < s; ++st) {
          CHECK_MESSAGE(format_ops(rec.ran[st]) == format_ops(schedule.stages[st]), "stage ", st);
          CHECK(rec.peak_in_flight[st] <= max_in_flight(schedule.stages[st]));
          CHECK(report.max_in_flight[st] == rec.peak_in_flight[st].load());
        }
        CHECK(report.events.size() == static_cast<size_t>(2 * s * m));
      }
    }
  }
}

// 1F1B with 4 stages and 8 micro-batches: stage 0 never admits a fifth micro-batch before B0,
// while GPipe lets all 8 in: the limiter, not luck, keeps activations bounded.
TEST_CASE("the in-flight limit is what the schedule allows, and GPipe reaches M") {
  Recorder one_f_one_b(4, 8), gpipe(4, 8);
  run_schedule(make_schedule(ScheduleKind::named("1f1b"), 4, 8), one_f_one_b.callbacks(), plain_boundaries(4), {});
  run_schedule(make_schedule(ScheduleKind::named("gpipe"), 4, 8), gpipe.callbacks(), plain_boundaries(4), {});
  CHECK(one_f_one_b.peak_in_flight[0] == 4);
  CHECK(one_f_one_b.peak_in_flight[3] == 1);
  CHECK(gpipe.peak_in_flight[0] == 8);
}

// Stages run at the same time: with 3 stages sleeping 5 ms per op, some ops overlap.
TEST_CASE("stages overlap in time") {
  Recorder rec(3, 8);
  rec.op_time = std::chrono::milliseconds(5);
  ExecutorOptions options;
  options.max_threads = 3;
  run_schedule(make_schedule(ScheduleKind::named("gpipe"), 3, 8), rec.callbacks(), plain_boundaries(3), options);
  CHECK_MESSAGE(rec.peak_concurrent >= 2, "a pipeline whose stages take turns is not a pipeline");
}

// max_threads bounds how many ops run at once: one thread runs the same schedule one op at a time.
TEST_CASE("max_threads = 1 runs one op at a time and still completes") {
  Recorder rec(3, 4);
  rec.op_time = std::chrono::milliseconds(1);
  ExecutorOptions options;
  options.max_threads = 1;
  run_schedule(make_schedule(ScheduleKind::named("1f1b"), 3, 4), rec.callbacks(), plain_boundaries(3), options);
  CHECK(rec.peak_concurrent == 1);
  CHECK(rec.dependency_errors == 0);
}

// Transfers run between the stages in both directions, each micro-batch once, and are recorded as
// spans of the sender, as the simulator does.
TEST_CASE("boundary callbacks carry every activation forward and every gradient back") {
  const int s = 3, m = 4;
  std::vector<std::vector<int>> sent_forward(s - 1), sent_back(s - 1);
  std::vector<BoundaryCallbacks> boundaries(s - 1);
  for (int b = 0; b < s - 1; ++b) {
    boundaries[b].send_activation = [&, b](int k) { sent_forward[b].push_back(k); };
    boundaries[b].send_gradient = [&, b](int k) { sent_back[b].push_back(k); };
  }
  Recorder rec(s, m);
  const ExecutionReport report = run_schedule(make_schedule(ScheduleKind::named("gpipe"), s, m), rec.callbacks(), boundaries, {});
  for (int b = 0; b < s - 1; ++b) {
    CHECK(sent_forward[b] == std::vector<int>{0, 1, 2, 3});
    CHECK(sent_back[b] == std::vector<int>{0, 1, 2, 3});
  }
  int gradient_spans_of_stage_2 = 0;
  for (const SimEvent& e : report.events) {
    if (e.kind == EventKind::kSendGradient && e.stage == 2) ++gradient_spans_of_stage_2;
  }
  CHECK(gradient_spans_of_stage_2 == m);
  CHECK(report.events.size() == static_cast<size_t>(2 * s * m + 2 * (s - 1) * m));
}

// An exception in one stage ends the run with that exception; the other stages finish at most the
// op they are in and start no other (here: stage 1 throws at its forward of micro-batch 2).
TEST_CASE("an exception in a stage cancels the graph and surfaces once") {
  for (ScheduleKind kind : {ScheduleKind::named("gpipe"), ScheduleKind::named("1f1b")}) {
    CAPTURE(kind.name());
    const int s = 3, m = 8;
    Recorder rec(s, m);
    // (the failing stage throws before the recorder sees the op)
    rec.op_time = std::chrono::milliseconds(2);
    std::vector<StageCallbacks> callbacks = rec.callbacks();
    std::atomic<int> started_after_failure{0};
    std::atomic<bool> failed{false};
    for (int st = 0; st < s; ++st) {
      auto forward = callbacks[st].forward;
      auto backward = callbacks[st].backward;
      callbacks[st].forward = [&, forward, st](int k) {
        if (failed) ++started_after_failure;
        if (st == 1 && k == 2) {
          failed = true;
          throw std::runtime_error("stage 1 failed on micro-batch 2");
        }
        forward(k);
      };
      callbacks[st].backward = [&, backward](int k) {
        if (failed) ++started_after_failure;
        backward(k);
      };
    }
    CHECK_THROWS_WITH_AS(run_schedule(make_schedule(kind, s, m), callbacks, plain_boundaries(s), {}),
                         "stage 1 failed on micro-batch 2", std::runtime_error);
    // A stage that had already passed its check may start one op in the instant before the failure is
    // published; no stage starts a second.
    CHECK_MESSAGE(started_after_failure <= s - 1, "stages stop starting ops once another stage failed");
    // The executor stays usable: the next run completes.
    Recorder again(s, m);
    run_schedule(make_schedule(kind, s, m), again.callbacks(), plain_boundaries(s), {});
    CHECK(format_ops(again.ran[0]) == format_ops(make_schedule(kind, s, m).stages[0]));
  }
}

// Mismatched callback counts are a caller's error, reported with the counts.
TEST_CASE("callback counts must match the schedule") {
  Recorder rec(2, 2);
  CHECK_THROWS_AS(run_schedule(make_schedule(ScheduleKind::named("gpipe"), 3, 2), rec.callbacks(), plain_boundaries(3), {}),
                  std::invalid_argument);
}

// The measured-timeline helpers read a simulated timeline back into the timings that made it: the
// bubble is the simulator's own, and median op times are the durations it was given.
TEST_CASE("timeline: bubble and median op times round-trip through the simulator") {
  const Schedule schedule = make_schedule(ScheduleKind::named("1f1b"), 3, 8);
  const std::vector<StageTiming> timings = {{1.0, 2.0, 0.0, 0.0, "cpu"}, {1.5, 3.0, 0.0, 0.0, "cpu[1]"}, {0.5, 1.0, 0.0, 0.0, "cpu"}};
  const std::vector<TransferTiming> transfers = {{0.1, 0.2, "a->b", "b->a"}, {0.0, 0.0, "", ""}};
  const SimResult sim = simulate(schedule, timings, transfers, 1000);
  CHECK(bubble_fraction(sim.events, 3) == doctest::Approx(sim.bubble_fraction));
  CHECK(pipeline_seconds(sim.events) == doctest::Approx(sim.pipeline_seconds));
  const OpTimes times = median_op_times({sim.events, sim.events}, 3, {"cpu", "cpu[1]", "cpu"}, 8);
  for (int s = 0; s < 3; ++s) {
    CHECK(times.stages[s].forward_seconds == doctest::Approx(timings[s].forward_seconds));
    CHECK(times.stages[s].backward_seconds == doctest::Approx(timings[s].backward_seconds));
  }
  CHECK(times.transfers[0].forward_seconds == doctest::Approx(0.1));
  CHECK(times.transfers[0].backward_seconds == doctest::Approx(0.2));
  CHECK(times.transfers[0].forward_resource == "a->b");
  CHECK(times.transfers[1].forward_resource.empty());
  const SimResult again = simulate(schedule, times.stages, times.transfers, 1000);
  CHECK(again.step_seconds == doctest::Approx(sim.step_seconds));
  // Equal stages, no transfers: the textbook bubble (S-1)/(M+S-1).
  const std::vector<StageTiming> equal(3, StageTiming{1.0, 2.0, 0.0, 0.0, ""});
  std::vector<StageTiming> own = equal;
  for (int s = 0; s < 3; ++s) own[s].resource = "r" + std::to_string(s);
  const SimResult textbook = simulate(make_schedule(ScheduleKind::named("gpipe"), 3, 8), own, {TransferTiming{}, TransferTiming{}}, 1);
  CHECK(bubble_fraction(textbook.events, 3) == doctest::Approx(2.0 / 10.0));
}

// Stages in one group take turns (they share cores): their spans never overlap, while a stage of
// its own still runs beside them.
TEST_CASE("stages of one group take turns while others run beside them") {
  Recorder rec(3, 8);
  rec.op_time = std::chrono::milliseconds(2);
  ExecutorOptions options;
  options.stage_groups = {0, -1, 0};
  const ExecutionReport report =
      run_schedule(make_schedule(ScheduleKind::named("1f1b"), 3, 8), rec.callbacks(), plain_boundaries(3), options);
  CHECK(rec.dependency_errors == 0);
  int overlaps_in_group = 0, overlaps_with_stage_1 = 0;
  for (const SimEvent& a : report.events) {
    for (const SimEvent& b : report.events) {
      if (&a == &b || a.kind > EventKind::kBackward || b.kind > EventKind::kBackward) continue;
      const bool overlap = a.start < b.end && b.start < a.end;
      if (overlap && a.stage == 0 && b.stage == 2) ++overlaps_in_group;
      if (overlap && a.stage == 0 && b.stage == 1) ++overlaps_with_stage_1;
    }
  }
  CHECK(overlaps_in_group == 0);
  CHECK_MESSAGE(overlaps_with_stage_1 > 0, "a stage outside the group is not held back by it");
}

// A layer-major stage (streamed) in the middle of three: its forward block runs once, after every
// micro-batch's input arrived from stage 0, and its outputs all go on to stage 2; its backward
// block once, after stage 2's every backward; stage 0 then gets every gradient. The other stages
// run op by op as before.
TEST_CASE("a layer-major stage runs its forwards and backwards as blocks") {
  const int m = 4;
  Recorder r(3, m);
  std::vector<StageCallbacks> callbacks = r.callbacks();
  std::atomic<int> forward_blocks{0}, backward_blocks{0};
  callbacks[1].forward = nullptr;
  callbacks[1].backward = nullptr;
  callbacks[1].forward_block = [&] {
    ++forward_blocks;
    for (int k = 0; k < m; ++k) {
      if (r.done[0][k] < 1) ++r.dependency_errors;
      r.done[1][k] = 1;
    }
  };
  callbacks[1].backward_block = [&] {
    ++backward_blocks;
    for (int k = 0; k < m; ++k) {
      if (r.done[2][k] != 2) ++r.dependency_errors;
      r.done[1][k] = 2;
    }
  };
  const ExecutionReport report = run_schedule(make_schedule(ScheduleKind::named("layer-major"), 3, m), callbacks,
                                              std::vector<BoundaryCallbacks>(2), {});
  // A block's span is M micro-batches' work: each op's median is its share.
  const SimEvent block{EventKind::kForward, 0, -1, "standin:0", 1.0, 5.0};
  CHECK(median_op_times({{block}}, 1, {"standin:0"}, m).stages[0].forward_seconds == doctest::Approx(1.0));
  CHECK(forward_blocks == 1);
  CHECK(backward_blocks == 1);
  CHECK(r.dependency_errors == 0);
  CHECK(format_ops(r.ran[0]) == "F0 F1 F2 F3 B0 B1 B2 B3");
  CHECK(format_ops(r.ran[2]) == "F0 F1 F2 F3 B0 B1 B2 B3");
  CHECK(report.max_in_flight[1] == m);
  int block_spans = 0;
  for (const SimEvent& e : report.events) block_spans += e.stage == 1 && e.micro_batch == -1;
  CHECK(block_spans == 2);
}

// A stage with two lanes (stage 0 of two, 1F1B over groups of 2): each wave of two ops of one kind
// runs at once on two threads, only once both inputs are there, and every op still sees its input;
// the other stage runs one op at a time. A lane's exception surfaces once, and no later op starts.
TEST_CASE("a stage with lanes runs each wave's ops at once") {
  const int m = 6;
  std::mutex mutex;
  std::vector<std::vector<Op>> ran(2);
  std::vector<std::vector<std::atomic<int>>> done(2);
  for (auto& row : done) row = std::vector<std::atomic<int>>(static_cast<size_t>(m));
  std::atomic<int> running0{0}, peak0{0}, running1{0}, peak1{0}, dependency_errors{0};
  std::set<std::thread::id> threads0;
  auto op = [&](int s, OpKind kind, int k) {
    std::atomic<int>& running = s == 0 ? running0 : running1;
    std::atomic<int>& peak = s == 0 ? peak0 : peak1;
    const int now = ++running;
    int seen = peak.load();
    while (now > seen && !peak.compare_exchange_weak(seen, now)) {}
    if (kind == OpKind::kForward && s == 1 && done[0][k] < 1) ++dependency_errors;
    if (kind == OpKind::kBackward && (done[s][k] != 1 || (s == 0 && done[1][k] != 2))) ++dependency_errors;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    {
      const std::lock_guard<std::mutex> lock(mutex);
      ran[s].push_back({kind, k});
      if (s == 0) threads0.insert(std::this_thread::get_id());
    }
    done[s][k] = kind == OpKind::kForward ? 1 : 2;
    --running;
  };
  std::vector<StageCallbacks> callbacks(2);
  for (int s = 0; s < 2; ++s) {
    callbacks[s].forward = [&, s](int k) { op(s, OpKind::kForward, k); };
    callbacks[s].backward = [&, s](int k) { op(s, OpKind::kBackward, k); };
  }
  ExecutorOptions options;
  options.stage_lanes = {2, 1};
  const Schedule schedule = make_schedule(ScheduleKind::named("1f1b"), 2, m, 2);
  const ExecutionReport report = run_schedule(schedule, callbacks, std::vector<BoundaryCallbacks>(1), options);
  CHECK(dependency_errors == 0);
  CHECK(peak0 == 2);
  CHECK(peak1 == 1);
  CHECK(threads0.size() >= 2);  // lane 0 runs on whichever thread runs the stage's node
  CHECK(ran[0].size() == static_cast<size_t>(2 * m));
  CHECK(ran[1] == schedule.stages[1]);
  CHECK(report.max_in_flight == schedule.in_flight());
  // A wave's ops start together: stage 0's spans come in pairs with one start.
  std::vector<double> starts;
  for (const SimEvent& e : report.events) {
    if (e.stage == 0 && e.kind <= EventKind::kBackward) starts.push_back(e.start);
  }
  REQUIRE(starts.size() == static_cast<size_t>(2 * m));
  for (size_t i = 0; i < starts.size(); i += 2) CHECK(starts[i] == starts[i + 1]);

  // Lane 1 throws in micro-batch 3's forward: one error, nothing after the wave starts.
  std::atomic<int> after{0};
  callbacks[0].forward = [&](int k) {
    if (k == 3) throw std::runtime_error("lane fails");
    if (k > 3) ++after;
  };
  callbacks[0].backward = [](int) {};
  callbacks[1].forward = [](int) {};
  callbacks[1].backward = [](int) {};
  CHECK_THROWS_WITH_AS(run_schedule(schedule, callbacks, std::vector<BoundaryCallbacks>(1), options), "lane fails",
                       std::runtime_error);
  CHECK(after == 0);
}
