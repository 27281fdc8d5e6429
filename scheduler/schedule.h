// Pipeline schedules as data: per stage, the ordered list of (forward | backward, micro-batch).
//
// The executor runs this list and the simulator replays it with costs, so both see one truth; the
// micro-batches a stage holds at once (what the memory estimate counts, and the executor's limiter
// admits) are read off the same list (max_in_flight), never from a formula of their own.
// For S = 3 stages and M = 4 micro-batches (F = forward, B = backward, number = micro-batch):
//
//   gpipe (fill, then drain)          1f1b (warm up S-s-1 forwards, then alternate)
//   s0: F0 F1 F2 F3 B0 B1 B2 B3       s0: F0 F1 F2 B0 F3 B1 B2 B3
//   s1: F0 F1 F2 F3 B0 B1 B2 B3       s1: F0 F1 B0 F2 B1 F3 B2 B3
//   s2: F0 F1 F2 F3 B0 B1 B2 B3       s2: F0 B0 F1 B1 F2 B2 F3 B3
//
// Each schedule is one file in scheduler/schedules/ that defines `const ScheduleDef
// kSchedule_<file name>`; CMake lists every file there into the registry, so adding a schedule is
// that file and its tests. Names are looked up in the registry; an unknown name is an InputError
// that lists the registered ones.
//
//   Schedule plan = make_schedule(ScheduleKind::named("1f1b"), 3, 4);
//   for (const Op& op : plan.stages[1]) run(op);
//   plan.in_flight();   // {3, 2, 1}
#pragma once

#include <string>
#include <vector>

namespace pipetrain {

enum class OpKind { kForward, kBackward };

struct Op {
  OpKind kind;
  int micro_batch;
  bool operator==(const Op& other) const { return kind == other.kind && micro_batch == other.micro_batch; }
};

// What a schedule file registers.
struct ScheduleDef {
  const char* name;   // as configs spell it: "1f1b"
  const char* label;  // as messages name it: "1F1B"
  // Stage `stage`'s ops (of `num_stages`) for `micro_batches`; every micro-batch's forward, then
  // later its backward, each exactly once.
  std::vector<Op> (*stage_ops)(int stage, int num_stages, int micro_batches);
};

// A registered schedule.
class ScheduleKind {
 public:
  // Throws InputError naming `name` and the registered schedules.
  static ScheduleKind named(const std::string& name);
  static std::vector<ScheduleKind> all();  // in registration order (file names, sorted)

  const ScheduleDef& def() const;
  std::string name() const { return def().name; }
  std::string label() const { return def().label; }
  bool operator==(const ScheduleKind& o) const { return index_ == o.index_; }
  bool operator!=(const ScheduleKind& o) const { return index_ != o.index_; }

 private:
  explicit ScheduleKind(int index) : index_(index) {}
  int index_;
};

struct Schedule {
  ScheduleKind kind;
  int num_stages;
  int num_micro_batches;
  std::vector<std::vector<Op>> stages;  // stages[s] = ordered ops of stage s
  int group = 1;  // micro-batches that move together (make_schedule)
  // Per stage, the most micro-batches whose forward ran and whose backward has not.
  std::vector<int> in_flight() const;
};

// Throws InputError when num_stages or num_micro_batches is below 1.
// With group g > 1 the schedule is made for ceil(M / g) groups of g consecutive micro-batches (the
// last may be smaller) and each op on a group becomes its micro-batches' ops in order: a stage with
// g lanes (memory/stage_map.h) then always has g of them to compute at once. 1F1B with g = 2 on
// one stage: F0 F1 B0 B1 F2 F3 B2 B3. Any schedule stays deadlock-free so, since running a group's
// ops one after another is running the group's op.
Schedule make_schedule(ScheduleKind kind, int num_stages, int num_micro_batches, int group = 1);

// Most micro-batches whose forward ran and whose backward has not, over the op list.
int max_in_flight(const std::vector<Op>& ops);

// "F0 F1 B0 B1": the notation of the tables above, for tests and traces.
std::string format_ops(const std::vector<Op>& ops);

}  // namespace pipetrain
