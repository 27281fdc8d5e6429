#include "scheduler/executor.h"

#include <oneapi/tbb/flow_graph.h>
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/task_arena.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <tuple>

#include "scheduler/tsan_handoff.h"

namespace pipetrain {
namespace {

namespace flow = oneapi::tbb::flow;
using Clock = std::chrono::steady_clock;

// What arrives at a stage: the input of forward k, or the output gradient of backward k.
struct Arrival {
  bool gradient = false;
  int micro_batch = 0;
};

// Output ports of a stage: activation downstream, gradient upstream, "a micro-batch left" to the limiter.
using StageNode = flow::multifunction_node<Arrival, std::tuple<Arrival, Arrival, flow::continue_msg>>;
using SendNode = flow::function_node<Arrival, Arrival>;

struct Shared {
  Clock::time_point start;
  std::atomic<bool> failed{false};
  double now() const { return std::chrono::duration<double>(Clock::now() - start).count(); }

  // ThreadSanitizer keys (scheduler/tsan_handoff.h) for the hand-offs oneTBB makes out of sight:
  // per node, one for the node itself (a serial node's bodies run one after another) and one per
  // kind and micro-batch of message it receives; `setup` orders the caller's setup before every body,
  // `done` every body before the caller's return.
  int micro_batches = 0;
  std::vector<char> keys;
  char done = 0;
  const void* self_key(int node) const { return &keys[static_cast<size_t>(node) * (2 * micro_batches + 1)]; }
  const void* message_key(int node, const Arrival& a) const {
    return &keys[static_cast<size_t>(node) * (2 * micro_batches + 1) + 1 + (a.gradient ? micro_batches : 0) +
                 static_cast<size_t>(a.micro_batch)];
  }
};

// The graph's construction happens before any body: released once the graph is built, acquired
// first thing in every body, before the body reads its own members. (One key for every run: runs
// in one process are ordered anyway.)
char graph_built_key = 0;

// A body's view of its hand-offs: what it received and its own earlier bodies happen before it;
// everything it did happens before its own next body and the caller's return.
class BodyScope {
 public:
  BodyScope(const Shared& shared, int node, const Arrival& arrival) : shared_(shared), node_(node) {
    tsan::acquire(shared.self_key(node));
    tsan::acquire(shared.message_key(node, arrival));
  }
  ~BodyScope() {
    tsan::release(shared_.self_key(node_));
    tsan::release(&shared_.done);
  }
  BodyScope(const BodyScope&) = delete;
  BodyScope& operator=(const BodyScope&) = delete;

 private:
  const Shared& shared_;
  int node_;
};

// Runs one callback as a timed span (after taking the stage's group turn, if it has a group); marks
// the run failed if it throws, so no stage starts another op.
template <typename Fn>
void run_span(Shared& shared, std::vector<SimEvent>& events, EventKind kind, int stage, int k,
              const std::string& resource, const Fn& fn, std::mutex* turn = nullptr) {
  std::unique_lock<std::mutex> lock;
  if (turn != nullptr) lock = std::unique_lock<std::mutex>(*turn);
  const double begin = shared.now();
  try {
    fn(k);
  } catch (...) {
    shared.failed = true;
    throw;
  }
  events.push_back({kind, stage, k, resource, begin, shared.now()});
}

// A stage's lanes: lane 0 is the thread of the stage's node, lanes 1..L-1 threads of their own that
// live as long as the run. run() gives job j to lane j, waits for all, and rethrows the first
// exception (by lane order) once every job has ended.
class LaneCrew {
 public:
  explicit LaneCrew(int lanes) : jobs_(static_cast<size_t>(lanes)), errors_(static_cast<size_t>(lanes)) {
    for (int lane = 1; lane < lanes; ++lane) threads_.emplace_back([this, lane] { work(lane); });
  }
  ~LaneCrew() {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (std::thread& t : threads_) t.join();
  }
  LaneCrew(const LaneCrew&) = delete;
  LaneCrew& operator=(const LaneCrew&) = delete;

  void run(std::vector<std::function<void()>> jobs) {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      for (size_t j = 1; j < jobs.size(); ++j) jobs_[j] = std::move(jobs[j]);
      for (auto& e : errors_) e = nullptr;
      pending_ = static_cast<int>(jobs.size()) - 1;
      ++round_;
    }
    wake_.notify_all();
    if (!jobs.empty()) {
      try {
        jobs[0]();
      } catch (...) {
        errors_[0] = std::current_exception();
      }
    }
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return pending_ == 0; });
    for (const auto& e : errors_) {
      if (e) std::rethrow_exception(e);
    }
  }

 private:
  void work(int lane) {
    int64_t seen = 0;
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return stopping_ || round_ != seen; });
      if (stopping_) return;
      seen = round_;
      std::function<void()> job = std::move(jobs_[static_cast<size_t>(lane)]);
      jobs_[static_cast<size_t>(lane)] = nullptr;
      if (!job) continue;  // a wave shorter than the lanes
      lock.unlock();
      std::exception_ptr error;
      try {
        job();
      } catch (...) {
        error = std::current_exception();
      }
      lock.lock();
      errors_[static_cast<size_t>(lane)] = error;
      if (--pending_ == 0) done_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::vector<std::function<void()>> jobs_;
  std::vector<std::exception_ptr> errors_;
  std::vector<std::thread> threads_;
  int pending_ = 0;
  int64_t round_ = 0;
  bool stopping_ = false;
};

// The body of one stage's serial node: records arrivals, then runs every op of its list whose input
// is there, in the schedule's order.
class StageBody {
 public:
  struct State {
    std::vector<bool> has_input, has_gradient, forward_done;
    size_t next = 0;
    int in_flight = 0;
    int max_in_flight = 0;
    std::vector<SimEvent> events;
  };

  // Node numbers for the hand-off keys: stage s is node s, the send node of activations from s is
  // num_stages + s, that of gradients from s is 2 * num_stages - 1 + (s - 1).
  StageBody(const Schedule& schedule, int stage, const StageCallbacks& callbacks, const std::string& resource,
            int limit, std::mutex* turn, State& state, Shared& shared, LaneCrew* crew = nullptr, int lanes = 1)
      : num_stages_(schedule.num_stages),
        ops_(schedule.stages[static_cast<size_t>(stage)]),
        stage_(stage),
        last_(stage + 1 == schedule.num_stages),
        callbacks_(callbacks),
        resource_(resource),
        limit_(limit),
        turn_(turn),
        state_(state),
        shared_(shared),
        crew_(crew),
        lanes_(lanes) {}

  void operator()(const Arrival& arrival, StageNode::output_ports_type& ports) const {
    tsan::acquire(&graph_built_key);
    const BodyScope scope(shared_, stage_, arrival);
    (arrival.gradient ? state_.has_gradient : state_.has_input)[static_cast<size_t>(arrival.micro_batch)] = true;
    if (callbacks_.forward_block || callbacks_.backward_block) {
      run_blocks(ports);
      return;
    }
    if (lanes_ > 1) {
      run_waves(ports);
      return;
    }
    while (state_.next < ops_.size() && !shared_.failed) {
      const size_t end = ready_run(1);
      if (end == state_.next) return;
      const Op& op = ops_[state_.next];
      admit(end);
      run_span(shared_, state_.events, op.kind == OpKind::kForward ? EventKind::kForward : EventKind::kBackward, stage_,
               op.micro_batch, resource_, op.kind == OpKind::kForward ? callbacks_.forward : callbacks_.backward, turn_);
      hand_on(end, ports);
    }
  }

 private:
  // The run of same-kind ops at `next`, at most `limit` long: its end, or `next` while some
  // input of it has not arrived.
  size_t ready_run(size_t limit) const {
    const OpKind kind = ops_[state_.next].kind;
    size_t end = state_.next;
    while (end < ops_.size() && ops_[end].kind == kind && end - state_.next < limit) ++end;
    for (size_t i = state_.next; i < end; ++i) {
      const size_t k = static_cast<size_t>(ops_[i].micro_batch);
      const bool ready = kind == OpKind::kForward ? state_.has_input[k] : (last_ ? state_.forward_done[k] : state_.has_gradient[k]);
      if (!ready) return state_.next;
    }
    return end;
  }

  // Ops [next, end) start: forwards count against the in-flight limit.
  void admit(size_t end) const {
    if (ops_[state_.next].kind != OpKind::kForward) return;
    state_.in_flight += static_cast<int>(end - state_.next);
    if (state_.in_flight > limit_) {
      throw std::logic_error("stage " + std::to_string(stage_) + " would hold " + std::to_string(state_.in_flight) +
                             " micro-batches in flight; the schedule allows " + std::to_string(limit_));
    }
    state_.max_in_flight = std::max(state_.max_in_flight, state_.in_flight);
  }

  // Ops [next, end) are done: their outputs, in the op list's order; then `next` moves past them.
  void hand_on(size_t end, StageNode::output_ports_type& ports) const {
    for (size_t i = state_.next; i < end; ++i) {
      const int k = ops_[i].micro_batch;
      if (ops_[i].kind == OpKind::kForward) {
        state_.forward_done[static_cast<size_t>(k)] = true;
        if (!last_) {
          const Arrival out{false, k};
          tsan::release(shared_.message_key(num_stages_ + stage_, out));
          std::get<0>(ports).try_put(out);
        }
      } else {
        --state_.in_flight;
        if (stage_ > 0) {
          const Arrival out{true, k};
          tsan::release(shared_.message_key(2 * num_stages_ - 1 + stage_ - 1, out));
          std::get<1>(ports).try_put(out);
        }
        if (stage_ == 0) std::get<2>(ports).try_put(flow::continue_msg());
      }
    }
    state_.next = end;
  }

  // A layer-major stage: the run of same-kind ops at `next` as one block, once every input of it
  // has arrived; then its outputs, in the op list's order.
  void run_blocks(StageNode::output_ports_type& ports) const {
    while (state_.next < ops_.size() && !shared_.failed) {
      const size_t end = ready_run(ops_.size());
      if (end == state_.next) return;
      const OpKind kind = ops_[state_.next].kind;
      admit(end);
      const std::function<void()>& block = kind == OpKind::kForward ? callbacks_.forward_block : callbacks_.backward_block;
      if (!block) throw std::logic_error("stage " + std::to_string(stage_) + " runs layer-major but has no block callback");
      run_span(shared_, state_.events, kind == OpKind::kForward ? EventKind::kForward : EventKind::kBackward, stage_, -1,
               resource_, [&](int) { block(); }, turn_);
      hand_on(end, ports);
    }
  }

  // A stage with lanes: the run of up to lanes_ ops of one kind at `next`, once every input of it
  // has arrived, at once on the lanes; then their outputs, in the op list's order.
  void run_waves(StageNode::output_ports_type& ports) const {
    while (state_.next < ops_.size() && !shared_.failed) {
      const size_t end = ready_run(static_cast<size_t>(lanes_));
      if (end == state_.next) return;
      const OpKind kind = ops_[state_.next].kind;
      admit(end);
      const std::function<void(int)>& op = kind == OpKind::kForward ? callbacks_.forward : callbacks_.backward;
      std::unique_lock<std::mutex> lock;
      if (turn_ != nullptr) lock = std::unique_lock<std::mutex>(*turn_);
      const double begin = shared_.now();
      std::vector<std::function<void()>> jobs;
      for (size_t i = state_.next; i < end; ++i) jobs.push_back([&, i] { op(ops_[i].micro_batch); });
      try {
        crew_->run(std::move(jobs));
      } catch (...) {
        shared_.failed = true;
        throw;
      }
      const double finish = shared_.now();
      if (lock.owns_lock()) lock.unlock();
      const EventKind event = kind == OpKind::kForward ? EventKind::kForward : EventKind::kBackward;
      for (size_t i = state_.next; i < end; ++i) state_.events.push_back({event, stage_, ops_[i].micro_batch, resource_, begin, finish});
      hand_on(end, ports);
    }
  }

  int num_stages_;
  const std::vector<Op>& ops_;
  int stage_;
  bool last_;
  const StageCallbacks& callbacks_;
  const std::string& resource_;
  int limit_;
  std::mutex* turn_;
  State& state_;
  Shared& shared_;
  LaneCrew* crew_;
  int lanes_;
};

// The body of one boundary direction: the transfer callback, then the arrival passes on.
class SendBody {
 public:
  // node: this send node's number; receiver: the stage it hands on to (see StageBody).
  SendBody(const std::function<void(int)>& send, EventKind kind, int sender, const std::string& resource,
           std::vector<SimEvent>& events, Shared& shared, int node, int receiver)
      : send_(send), kind_(kind), sender_(sender), resource_(resource), events_(events), shared_(shared), node_(node),
        receiver_(receiver) {}

  Arrival operator()(const Arrival& arrival) const {
    tsan::acquire(&graph_built_key);
    const BodyScope scope(shared_, node_, arrival);
    if (send_ && !shared_.failed) run_span(shared_, events_, kind_, sender_, arrival.micro_batch, resource_, send_);
    tsan::release(shared_.message_key(receiver_, arrival));
    return arrival;
  }

 private:
  const std::function<void(int)>& send_;
  EventKind kind_;
  int sender_;
  const std::string& resource_;
  std::vector<SimEvent>& events_;
  Shared& shared_;
  int node_;
  int receiver_;
};

std::vector<std::string> names_or(const std::vector<std::string>& given, int count,
                                  const std::function<std::string(int)>& fallback) {
  if (static_cast<int>(given.size()) == count) return given;
  std::vector<std::string> names;
  for (int i = 0; i < count; ++i) names.push_back(fallback(i));
  return names;
}

}  // namespace

ExecutionReport run_schedule(const Schedule& schedule, const std::vector<StageCallbacks>& stages,
                             const std::vector<BoundaryCallbacks>& boundaries, const ExecutorOptions& options) {
  const int num_stages = schedule.num_stages;
  const int m = schedule.num_micro_batches;
  if (static_cast<int>(stages.size()) != num_stages || static_cast<int>(boundaries.size()) != num_stages - 1) {
    throw std::invalid_argument("run_schedule: " + std::to_string(stages.size()) + " stage and " +
                                std::to_string(boundaries.size()) + " boundary callbacks for a schedule of " +
                                std::to_string(num_stages) + " stages");
  }
  const auto stage_names = names_or(options.stage_resources, num_stages, [](int s) { return "stage " + std::to_string(s); });
  const auto forward_names = names_or(options.forward_resources, num_stages - 1, [](int b) {
    return "send " + std::to_string(b) + "->" + std::to_string(b + 1);
  });
  const auto backward_names = names_or(options.backward_resources, num_stages - 1, [](int b) {
    return "send " + std::to_string(b + 1) + "->" + std::to_string(b);
  });

  Shared shared;
  std::map<int, std::mutex> group_turns;
  auto turn_of = [&](int s) -> std::mutex* {
    if (static_cast<size_t>(s) >= options.stage_groups.size() || options.stage_groups[static_cast<size_t>(s)] < 0) return nullptr;
    return &group_turns[options.stage_groups[static_cast<size_t>(s)]];
  };
  std::vector<StageBody::State> states(static_cast<size_t>(num_stages));
  auto lanes_of = [&](int s) {
    return static_cast<size_t>(s) < options.stage_lanes.size() ? std::max(1, options.stage_lanes[static_cast<size_t>(s)]) : 1;
  };
  std::vector<std::unique_ptr<LaneCrew>> crews(static_cast<size_t>(num_stages));
  for (int s = 0; s < num_stages; ++s) {
    if (lanes_of(s) > 1) crews[static_cast<size_t>(s)] = std::make_unique<LaneCrew>(lanes_of(s));
  }
  for (auto& state : states) {
    state.has_input.assign(static_cast<size_t>(m), false);
    state.has_gradient.assign(static_cast<size_t>(m), false);
    state.forward_done.assign(static_cast<size_t>(m), false);
  }
  std::vector<std::vector<SimEvent>> forward_events(static_cast<size_t>(std::max(0, num_stages - 1)));
  std::vector<std::vector<SimEvent>> backward_events(forward_events.size());

  // One thread per stage and per boundary direction can be busy at once; the caller may allow fewer.
  const int nodes = num_stages + 2 * (num_stages - 1);
  const int threads = options.max_threads > 0 ? std::min(options.max_threads, nodes) : nodes;
  // oneTBB caps its workers at the core count by default; a node that waits (for a shared core pool,
  // for a GPU) must not keep another stage from running, so the graph gets its threads explicitly.
  // What computes at once is bounded by the caller's core groups, not by this count.
  oneapi::tbb::global_control allow(oneapi::tbb::global_control::max_allowed_parallelism,
                                    static_cast<size_t>(std::max(threads, 1)));
  oneapi::tbb::task_arena arena(threads, /*reserved_for_masters=*/1);
  shared.micro_batches = m;
  shared.keys.assign(static_cast<size_t>(nodes) * static_cast<size_t>(2 * m + 1), 0);
  shared.start = Clock::now();
  arena.execute([&] {
    flow::graph graph;

    // Nodes, named by role.
    flow::queue_node<Arrival> micro_batches(graph);
    flow::limiter_node<Arrival> admit(graph, static_cast<size_t>(max_in_flight(schedule.stages[0])));
    std::vector<std::unique_ptr<StageNode>> stage_nodes;
    std::vector<std::unique_ptr<SendNode>> send_forward, send_backward;
    for (int s = 0; s < num_stages; ++s) {
      const int limit = max_in_flight(schedule.stages[static_cast<size_t>(s)]);
      stage_nodes.push_back(std::make_unique<StageNode>(
          graph, flow::serial,
          StageBody(schedule, s, stages[static_cast<size_t>(s)], stage_names[static_cast<size_t>(s)], limit, turn_of(s),
                    states[static_cast<size_t>(s)], shared, crews[static_cast<size_t>(s)].get(), lanes_of(s))));
    }
    for (int b = 0; b + 1 < num_stages; ++b) {
      const size_t i = static_cast<size_t>(b);
      send_forward.push_back(std::make_unique<SendNode>(
          graph, flow::serial,
          SendBody(boundaries[i].send_activation, EventKind::kSendActivation, b, forward_names[i], forward_events[i], shared,
                   num_stages + b, b + 1)));
      send_backward.push_back(std::make_unique<SendNode>(
          graph, flow::serial,
          SendBody(boundaries[i].send_gradient, EventKind::kSendGradient, b + 1, backward_names[i], backward_events[i], shared,
                   2 * num_stages - 1 + b, b)));
    }

    // Edges, grouped by destination.
    flow::make_edge(micro_batches, admit);
    flow::make_edge(flow::output_port<2>(*stage_nodes[0]), admit.decrementer());
    flow::make_edge(admit, *stage_nodes[0]);
    for (int b = 0; b + 1 < num_stages; ++b) {
      const size_t i = static_cast<size_t>(b);
      flow::make_edge(flow::output_port<0>(*stage_nodes[i]), *send_forward[i]);  // activation b -> b+1
      flow::make_edge(*send_forward[i], *stage_nodes[i + 1]);
      flow::make_edge(flow::output_port<1>(*stage_nodes[i + 1]), *send_backward[i]);  // gradient b+1 -> b
      flow::make_edge(*send_backward[i], *stage_nodes[i]);
    }

    // Every body happens before the graph goes and the results are read, also when one threw.
    struct BodiesDone {
      const Shared& shared;
      ~BodiesDone() { tsan::acquire(&shared.done); }
    } bodies_done{shared};
    tsan::release(&graph_built_key);
    for (int k = 0; k < m; ++k) micro_batches.try_put(Arrival{false, k});
    graph.wait_for_all();
  });

  ExecutionReport report;
  report.seconds = shared.now();
  report.started = shared.start;
  for (int s = 0; s < num_stages; ++s) {
    const StageBody::State& state = states[static_cast<size_t>(s)];
    if (state.next != schedule.stages[static_cast<size_t>(s)].size()) {
      throw std::logic_error("the schedule stalled: stage " + std::to_string(s) + " ran " + std::to_string(state.next) +
                             " of its " + std::to_string(schedule.stages[static_cast<size_t>(s)].size()) + " ops (" +
                             format_ops(schedule.stages[static_cast<size_t>(s)]) + ")");
    }
    report.max_in_flight.push_back(state.max_in_flight);
    report.events.insert(report.events.end(), state.events.begin(), state.events.end());
  }
  for (size_t b = 0; b < forward_events.size(); ++b) {
    report.events.insert(report.events.end(), forward_events[b].begin(), forward_events[b].end());
    report.events.insert(report.events.end(), backward_events[b].begin(), backward_events[b].end());
  }
  std::sort(report.events.begin(), report.events.end(),
            [](const SimEvent& a, const SimEvent& b) { return a.start < b.start; });
  return report;
}

}  // namespace pipetrain
