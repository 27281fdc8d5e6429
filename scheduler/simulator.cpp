#include "scheduler/simulator.h"

#include <algorithm>
#include <limits>
#include <stdexcept>

namespace pipetrain {

std::string event_kind_name(EventKind kind) {
  switch (kind) {
    case EventKind::kForward: return "forward";
    case EventKind::kBackward: return "backward";
    case EventKind::kSendActivation: return "send activation";
    case EventKind::kSendGradient: return "send gradient";
    case EventKind::kOptimizer: return "optimizer";
    case EventKind::kGradNorm: return "gradient norm";
    case EventKind::kLoadWeights: return "load weights";
    case EventKind::kWeightGradients: return "weight gradients";
    case EventKind::kGradientSum: return "gradient sum";
  }
  return "?";
}

namespace {

constexpr double kNever = std::numeric_limits<double>::infinity();

struct PendingTransfer {
  EventKind kind;
  int from_stage;
  int micro_batch;
  double ready;
  double duration;
  std::string resource;
};

}  // namespace

std::vector<BlockEvent> streamed_block(const StreamedTiming& timing, bool forward, int micro_batches, double start) {
  const int n = static_cast<int>(timing.layers.size());
  const int window = std::max(1, timing.window_layers);
  const double m = static_cast<double>(micro_batches);
  // Per visit i (the i-th layer this block visits), when each of its parts ends.
  std::vector<double> loaded(static_cast<size_t>(n)), computed(static_cast<size_t>(n)), sent(static_cast<size_t>(n)),
      stepped(static_cast<size_t>(n));
  auto at = [](const std::vector<double>& v, int i, double before) { return i < 0 ? before : v[static_cast<size_t>(i)]; };
  std::vector<BlockEvent> events;
  for (int i = 0; i < n; ++i) {
    const int layer = forward ? i : n - 1 - i;
    const StreamedLayerTiming& t = timing.layers[static_cast<size_t>(layer)];
    const size_t v = static_cast<size_t>(i);
    // The copy engine is free after the previous load; a window slot once the layer `window`
    // visits back is done computing.
    const double load_start = std::max(at(loaded, i - 1, start), at(computed, i - window, start));
    loaded[v] = load_start + t.load_seconds;
    events.push_back({BlockEventKind::kLoad, layer, load_start, loaded[v]});
    double compute_start = std::max(loaded[v], at(computed, i - 1, start));
    if (!forward) compute_start = std::max(compute_start, at(sent, i - 2, start));  // its gradient slot
    computed[v] = compute_start + m * (forward ? t.forward_seconds : t.backward_seconds);
    events.push_back({BlockEventKind::kCompute, layer, compute_start, computed[v]});
    if (forward) continue;
    // One worker copies the gradients out and then steps the layer, in turn (the runtime's: loads
    // never wait behind it), so a copy out waits for the previous layer's step.
    const double send_start = std::max(computed[v], at(stepped, i - 1, start));
    sent[v] = send_start + t.gradient_seconds;
    events.push_back({BlockEventKind::kGradientOut, layer, send_start, sent[v]});
    const double step_start = sent[v];
    stepped[v] = step_start + t.step_seconds;
    if (t.step_seconds > 0.0) events.push_back({BlockEventKind::kStep, layer, step_start, stepped[v]});
  }
  return events;
}

SimResult simulate(const Schedule& schedule, const std::vector<StageTiming>& stages,
                   const std::vector<TransferTiming>& transfers, int64_t tokens_per_step) {
  const int num_stages = schedule.num_stages;
  const int m = schedule.num_micro_batches;
  if (static_cast<int>(stages.size()) != num_stages || static_cast<int>(transfers.size()) != num_stages - 1) {
    throw std::invalid_argument("simulate: need one StageTiming per stage and one TransferTiming per boundary");
  }
  // input_ready[s][k]: when stage s has forward input k; grad_ready[s][k]: when it has output gradient k.
  std::vector<std::vector<double>> input_ready(num_stages, std::vector<double>(m, kNever));
  std::vector<std::vector<double>> grad_ready(num_stages, std::vector<double>(m, kNever));
  for (int k = 0; k < m; ++k) input_ready[0][k] = 0.0;
  std::vector<size_t> next(num_stages, 0);
  std::vector<double> stage_free(num_stages, 0.0);
  std::map<std::string, double> resource_free;
  std::map<std::string, double> busy;
  std::vector<PendingTransfer> pending;
  SimResult result;

  auto deliver = [&](EventKind kind, int from, int k, double at) {
    if (kind == EventKind::kSendActivation) input_ready[from + 1][k] = at;
    else grad_ready[from - 1][k] = at;
  };
  // share: the part of the resource the event takes (a lane's 1 / lanes).
  auto record = [&](EventKind kind, int stage, int k, const std::string& resource, double start, double end,
                    int layer = -1, double share = 1.0) {
    result.events.push_back({kind, stage, k, resource, start, end, layer});
    resource_free[resource] = std::max(resource_free[resource], end);
    busy[resource] += (end - start) * share;
  };
  // Stage s's output of micro-batch k, ready at `at`, on its way to the next stage (forward) or the
  // previous one (backward): handed over, or queued for its copy engine.
  auto send = [&](int s, bool forward, int k, double at) {
    const int to = forward ? s + 1 : s - 1;
    if (to < 0 || to >= num_stages) return;
    const TransferTiming& link = transfers[static_cast<size_t>(forward ? s : s - 1)];
    const std::string& resource = forward ? link.forward_resource : link.backward_resource;
    const EventKind kind = forward ? EventKind::kSendActivation : EventKind::kSendGradient;
    if (resource.empty()) {
      deliver(kind, s, k, at);
    } else {
      pending.push_back({kind, s, k, at, forward ? link.forward_seconds : link.backward_seconds, resource});
    }
  };

  size_t remaining = 0;
  for (const auto& ops : schedule.stages) remaining += ops.size();
  // A streamed stage's next M ops (all forwards or all backwards) as one layer-major block.
  auto run_block = [&](int s, double start) {
    const std::vector<Op>& ops = schedule.stages[s];
    const bool forward = ops[next[s]].kind == OpKind::kForward;
    for (int k = 0; k < m; ++k) {
      if (next[s] + static_cast<size_t>(k) >= ops.size() || ops[next[s] + static_cast<size_t>(k)].kind != ops[next[s]].kind) {
        throw std::invalid_argument("simulate: streamed stage " + std::to_string(s) + " runs layer-major, which needs all " +
                                    std::to_string(m) + " forwards, then all backwards (schedule layer-major)");
      }
    }
    const StreamedTiming& timing = stages[s].streamed;
    double compute_end = start;
    for (const BlockEvent& e : streamed_block(timing, forward, m, start)) {
      switch (e.kind) {
        case BlockEventKind::kLoad:
          record(EventKind::kLoadWeights, s, -1, timing.load_resource, e.start, e.end, e.layer);
          break;
        case BlockEventKind::kCompute:
          record(forward ? EventKind::kForward : EventKind::kBackward, s, -1, stages[s].resource, e.start, e.end, e.layer);
          compute_end = std::max(compute_end, e.end);
          break;
        case BlockEventKind::kGradientOut:
          record(EventKind::kWeightGradients, s, -1, timing.gradient_resource, e.start, e.end, e.layer);
          break;
        case BlockEventKind::kStep:
          record(EventKind::kOptimizer, s, -1, timing.step_resource, e.start, e.end, e.layer);
          break;
      }
    }
    stage_free[s] = compute_end;
    remaining -= static_cast<size_t>(m);
    for (int k = 0; k < m; ++k) {
      const int micro_batch = ops[next[s]++].micro_batch;
      if (forward && s == num_stages - 1) grad_ready[s][micro_batch] = compute_end;
      send(s, forward, micro_batch, compute_end);
    }
  };

  // A stage with lanes: the next run of up to `lanes` ops of one kind, and when all their inputs are there.
  auto wave_of = [&](int s) {
    const std::vector<Op>& ops = schedule.stages[s];
    const OpKind kind = ops[next[s]].kind;
    size_t end = next[s];
    double ready = 0.0;
    while (end < ops.size() && ops[end].kind == kind && end - next[s] < static_cast<size_t>(stages[s].lanes)) {
      const auto& inputs = kind == OpKind::kForward ? input_ready[s] : grad_ready[s];
      ready = std::max(ready, inputs[static_cast<size_t>(ops[end].micro_batch)]);
      ++end;
    }
    return std::pair{end, ready};
  };
  auto run_wave = [&](int s, double start) {
    const size_t end = wave_of(s).first;
    const bool forward = schedule.stages[s][next[s]].kind == OpKind::kForward;
    const double finish = start + (forward ? stages[s].forward_seconds : stages[s].backward_seconds);
    const double share = 1.0 / static_cast<double>(stages[s].lanes);
    for (; next[s] < end; ++next[s], --remaining) {
      const int k = schedule.stages[s][next[s]].micro_batch;
      record(forward ? EventKind::kForward : EventKind::kBackward, s, k, stages[s].resource, start, finish, -1, share);
      if (forward && s == num_stages - 1) grad_ready[s][k] = finish;
      send(s, forward, k, finish);
    }
    stage_free[s] = finish;
  };

  while (remaining > 0 || !pending.empty()) {
    // The op or transfer that can start first.
    double best_start = kNever;
    int best_stage = -1;
    int best_transfer = -1;
    for (int s = num_stages - 1; s >= 0; --s) {
      if (next[s] >= schedule.stages[s].size()) continue;
      const Op& op = schedule.stages[s][next[s]];
      const auto& inputs = op.kind == OpKind::kForward ? input_ready[s] : grad_ready[s];
      // A streamed stage's block waits for all M of its inputs; any other op for its own.
      const double ready = stages[s].is_streamed()  ? *std::max_element(inputs.begin(), inputs.end())
                           : stages[s].lanes > 1    ? wave_of(s).second
                                                    : inputs[static_cast<size_t>(op.micro_batch)];
      if (ready == kNever) continue;
      double start = std::max({ready, stage_free[s], resource_free[stages[s].resource]});
      if (stages[s].is_streamed()) start = std::max(start, resource_free[stages[s].streamed.load_resource]);
      if (start < best_start) {
        best_start = start;
        best_stage = s;
      }
    }
    for (size_t i = 0; i < pending.size(); ++i) {
      const double start = std::max(pending[i].ready, resource_free[pending[i].resource]);
      if (start < best_start) {
        best_start = start;
        best_stage = -1;
        best_transfer = static_cast<int>(i);
      }
    }
    if (best_stage < 0 && best_transfer < 0) throw std::logic_error("simulate: schedule deadlocks");

    if (best_transfer >= 0) {
      const PendingTransfer t = pending[static_cast<size_t>(best_transfer)];
      pending.erase(pending.begin() + best_transfer);
      record(t.kind, t.from_stage, t.micro_batch, t.resource, best_start, best_start + t.duration);
      deliver(t.kind, t.from_stage, t.micro_batch, best_start + t.duration);
      continue;
    }
    const int s = best_stage;
    if (stages[s].is_streamed()) {
      run_block(s, best_start);
      continue;
    }
    if (stages[s].lanes > 1) {
      run_wave(s, best_start);
      continue;
    }
    const Op op = schedule.stages[s][next[s]++];
    --remaining;
    const bool forward = op.kind == OpKind::kForward;
    const double end = best_start + (forward ? stages[s].forward_seconds : stages[s].backward_seconds);
    record(forward ? EventKind::kForward : EventKind::kBackward, s, op.micro_batch, stages[s].resource, best_start, end);
    stage_free[s] = end;
    if (forward && s == num_stages - 1) grad_ready[s][op.micro_batch] = end;  // the loss is computed here
    send(s, forward, op.micro_batch, end);
  }

  double compute = 0.0;
  for (const SimEvent& e : result.events) {
    if (e.kind == EventKind::kForward || e.kind == EventKind::kBackward) {
      compute += (e.end - e.start) / static_cast<double>(stages[static_cast<size_t>(e.stage)].lanes);
    }
    result.pipeline_seconds = std::max(result.pipeline_seconds, e.end);
  }
  // Replicas: each stage's gradient sum once its last backward (or backward block) has ended, the
  // last stage first, each on its host's network; the norm waits for every sum.
  double now = result.pipeline_seconds;
  std::vector<double> last_backward(static_cast<size_t>(num_stages), 0.0);
  for (const SimEvent& e : result.events) {
    if (e.kind == EventKind::kBackward) last_backward[static_cast<size_t>(e.stage)] = std::max(last_backward[static_cast<size_t>(e.stage)], e.end);
  }
  std::map<std::string, double> network_free;
  double sums_end = 0.0;
  for (int s = num_stages - 1; s >= 0; --s) {
    const StageTiming& t = stages[static_cast<size_t>(s)];
    if (t.sum_seconds <= 0.0) continue;
    const double start = std::max(last_backward[static_cast<size_t>(s)], network_free[t.sum_resource]);
    record(EventKind::kGradientSum, s, -1, t.sum_resource, start, start + t.sum_seconds);
    network_free[t.sum_resource] = start + t.sum_seconds;
    sums_end = std::max(sums_end, start + t.sum_seconds);
  }
  now = std::max(now, sums_end);
  // The optimizer phase: the norm over every stage, then each stage's step, one after another.
  for (const auto& [kind, seconds] : {std::pair{EventKind::kGradNorm, &StageTiming::norm_seconds},
                                      std::pair{EventKind::kOptimizer, &StageTiming::optimizer_seconds}}) {
    for (int s = 0; s < num_stages; ++s) {
      const double duration = stages[s].*seconds;
      if (duration <= 0.0) continue;
      // A streamed stage's gradients and optimizer are in RAM: the CPU works here, not its GPU.
      const std::string& resource = stages[s].is_streamed() ? stages[s].streamed.step_resource : stages[s].resource;
      record(kind, s, -1, resource, now, now + duration);
      now += duration;
    }
  }
  result.step_seconds = now;
  result.optimizer_phase_seconds = now - result.pipeline_seconds;
  std::stable_sort(result.events.begin(), result.events.end(),
                   [](const SimEvent& a, const SimEvent& b) { return a.start < b.start; });
  if (result.step_seconds > 0.0) {
    result.tokens_per_s = static_cast<double>(tokens_per_step) / result.step_seconds;
    result.bubble_fraction = 1.0 - compute / (static_cast<double>(num_stages) * result.pipeline_seconds);
    double most = -1.0;
    for (const auto& [resource, seconds] : busy) {
      result.utilisation[resource] = seconds / result.step_seconds;
      if (seconds > most) {
        most = seconds;
        result.bottleneck = resource;
      }
    }
  }
  return result;
}

SimResult simulate_with_neighbours(const Schedule& schedule, const std::vector<StageTiming>& stages,
                                   const std::vector<TransferTiming>& transfers, int64_t tokens_per_step,
                                   const std::vector<bool>& cpu_stage, std::vector<StageTiming>* replayed) {
  if (replayed != nullptr) *replayed = stages;
  const auto adjustable = [&](size_t s) {
    return s < cpu_stage.size() && cpu_stage[s] && stages[s].lanes == 1 && stages[s].alone_ratio != 1.0;
  };
  bool any = false;
  for (size_t s = 0; s < stages.size(); ++s) any = any || adjustable(s);
  SimResult first = simulate(schedule, stages, transfers, tokens_per_step);
  if (!any) return first;
  // Per stage, its compute spans; then per adjustable stage the part of them that another CPU
  // resource's spans cover.
  using Span = std::pair<double, double>;
  std::vector<std::vector<Span>> spans(stages.size());
  for (const SimEvent& e : first.events) {
    if (e.kind == EventKind::kForward || e.kind == EventKind::kBackward) spans[static_cast<size_t>(e.stage)].push_back({e.start, e.end});
  }
  std::vector<StageTiming> adjusted = stages;
  for (size_t s = 0; s < stages.size(); ++s) {
    if (!adjustable(s)) continue;
    std::vector<Span> others;
    for (size_t t = 0; t < stages.size(); ++t) {
      if (t == s || !cpu_stage[t] || stages[t].resource == stages[s].resource) continue;
      others.insert(others.end(), spans[t].begin(), spans[t].end());
    }
    std::sort(others.begin(), others.end());
    std::vector<Span> merged;
    for (const Span& o : others) {
      if (!merged.empty() && o.first <= merged.back().second) {
        merged.back().second = std::max(merged.back().second, o.second);
      } else {
        merged.push_back(o);
      }
    }
    double busy = 0.0, covered = 0.0;
    for (const Span& mine : spans[s]) {
      busy += mine.second - mine.first;
      for (const Span& o : merged) covered += std::max(0.0, std::min(mine.second, o.second) - std::max(mine.first, o.first));
    }
    const double share = busy > 0.0 ? std::min(1.0, covered / busy) : 1.0;
    const double factor = share + (1.0 - share) * stages[s].alone_ratio;
    adjusted[s].forward_seconds *= factor;
    adjusted[s].backward_seconds *= factor;
  }
  if (replayed != nullptr) *replayed = adjusted;
  return simulate(schedule, adjusted, transfers, tokens_per_step);
}

}  // namespace pipetrain
