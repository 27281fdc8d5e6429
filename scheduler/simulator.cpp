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
  auto record = [&](EventKind kind, int stage, int k, const std::string& resource, double start, double end) {
    result.events.push_back({kind, stage, k, resource, start, end});
    resource_free[resource] = end;
    busy[resource] += end - start;
  };

  size_t remaining = 0;
  for (const auto& ops : schedule.stages) remaining += ops.size();
  while (remaining > 0 || !pending.empty()) {
    // The op or transfer that can start first.
    double best_start = kNever;
    int best_stage = -1;
    int best_transfer = -1;
    for (int s = num_stages - 1; s >= 0; --s) {
      if (next[s] >= schedule.stages[s].size()) continue;
      const Op& op = schedule.stages[s][next[s]];
      const double ready = op.kind == OpKind::kForward ? input_ready[s][op.micro_batch] : grad_ready[s][op.micro_batch];
      if (ready == kNever) continue;
      const double start = std::max({ready, stage_free[s], resource_free[stages[s].resource]});
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
    const Op op = schedule.stages[s][next[s]++];
    --remaining;
    const bool forward = op.kind == OpKind::kForward;
    const double end = best_start + (forward ? stages[s].forward_seconds : stages[s].backward_seconds);
    record(forward ? EventKind::kForward : EventKind::kBackward, s, op.micro_batch, stages[s].resource, best_start, end);
    stage_free[s] = end;
    if (forward && s == num_stages - 1) grad_ready[s][op.micro_batch] = end;  // the loss is computed here
    const int to = forward ? s + 1 : s - 1;
    if (to < 0 || to >= num_stages) continue;
    const TransferTiming& link = transfers[static_cast<size_t>(forward ? s : s - 1)];
    const std::string& resource = forward ? link.forward_resource : link.backward_resource;
    const EventKind kind = forward ? EventKind::kSendActivation : EventKind::kSendGradient;
    if (resource.empty()) {
      deliver(kind, s, op.micro_batch, end);
    } else {
      pending.push_back({kind, s, op.micro_batch, end, forward ? link.forward_seconds : link.backward_seconds, resource});
    }
  }

  double compute = 0.0;
  for (const SimEvent& e : result.events) {
    if (e.kind == EventKind::kForward || e.kind == EventKind::kBackward) compute += e.end - e.start;
    result.pipeline_seconds = std::max(result.pipeline_seconds, e.end);
  }
  // The optimizer phase: the norm over every stage, then each stage's step, one after another.
  double now = result.pipeline_seconds;
  for (const auto& [kind, seconds] : {std::pair{EventKind::kGradNorm, &StageTiming::norm_seconds},
                                      std::pair{EventKind::kOptimizer, &StageTiming::optimizer_seconds}}) {
    for (int s = 0; s < num_stages; ++s) {
      const double duration = stages[s].*seconds;
      if (duration <= 0.0) continue;
      record(kind, s, -1, stages[s].resource, now, now + duration);
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

}  // namespace pipetrain
