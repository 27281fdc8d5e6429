#include "scheduler/timeline.h"

#include <algorithm>
#include <stdexcept>

#include "scheduler/statistics.h"

namespace pipetrain {
namespace {

bool is_compute(EventKind kind) { return kind == EventKind::kForward || kind == EventKind::kBackward; }

}  // namespace

double pipeline_seconds(const std::vector<SimEvent>& events) {
  double first = 0.0, last = 0.0;
  bool any = false;
  for (const SimEvent& e : events) {
    if (!is_compute(e.kind)) continue;
    first = any ? std::min(first, e.start) : e.start;
    last = any ? std::max(last, e.end) : e.end;
    any = true;
  }
  return any ? last - first : 0.0;
}

double bubble_fraction(const std::vector<SimEvent>& events, int num_stages, const std::vector<int>& lanes) {
  const double span = pipeline_seconds(events);
  if (span <= 0.0 || num_stages < 1) return 0.0;
  double compute = 0.0;
  for (const SimEvent& e : events) {
    if (!is_compute(e.kind)) continue;
    const size_t s = static_cast<size_t>(e.stage);
    compute += (e.end - e.start) / (s < lanes.size() ? std::max(1, lanes[s]) : 1);
  }
  return 1.0 - compute / (static_cast<double>(num_stages) * span);
}

OpTimes median_op_times(const std::vector<std::vector<SimEvent>>& steps, int num_stages,
                        const std::vector<std::string>& stage_resources, int micro_batches,
                        const std::vector<int>& lanes) {
  if (static_cast<int>(stage_resources.size()) != num_stages) {
    throw std::invalid_argument("median_op_times: one resource per stage");
  }
  const size_t s_count = static_cast<size_t>(num_stages);
  const size_t b_count = s_count > 0 ? s_count - 1 : 0;
  std::vector<std::vector<double>> forward(s_count), backward(s_count), optimizer(s_count), norm(s_count);
  std::vector<std::vector<double>> send_forward(b_count), send_backward(b_count);
  OpTimes out;
  out.stages.resize(s_count);
  out.transfers.resize(b_count);
  for (const auto& events : steps) {
    for (const SimEvent& e : events) {
      const double seconds = e.end - e.start;
      if (e.stage < 0 || e.stage >= num_stages) continue;
      const size_t s = static_cast<size_t>(e.stage);
      switch (e.kind) {
        // A layer-major block (micro-batch -1) ran every micro-batch: each took its share.
        case EventKind::kForward: forward[s].push_back(e.micro_batch < 0 ? seconds / micro_batches : seconds); break;
        case EventKind::kBackward: backward[s].push_back(e.micro_batch < 0 ? seconds / micro_batches : seconds); break;
        case EventKind::kOptimizer: optimizer[s].push_back(seconds); break;
        case EventKind::kGradNorm: norm[s].push_back(seconds); break;
        case EventKind::kSendActivation:
          if (s < b_count) {
            send_forward[s].push_back(seconds);
            out.transfers[s].forward_resource = e.resource;
          }
          break;
        case EventKind::kSendGradient:
          if (s >= 1) {
            send_backward[s - 1].push_back(seconds);
            out.transfers[s - 1].backward_resource = e.resource;
          }
          break;
        case EventKind::kLoadWeights:
        case EventKind::kWeightGradients:
          break;  // a streamed stage's per-layer copies: its per-op medians do not describe them
      }
    }
  }
  for (size_t s = 0; s < s_count; ++s) {
    StageTiming& t = out.stages[s];
    t.forward_seconds = median(forward[s]);
    t.backward_seconds = median(backward[s]);
    t.optimizer_seconds = median(optimizer[s]);
    t.norm_seconds = median(norm[s]);
    t.resource = stage_resources[s];
    t.lanes = s < lanes.size() ? std::max(1, lanes[s]) : 1;
  }
  for (size_t b = 0; b < b_count; ++b) {
    out.transfers[b].forward_seconds = median(send_forward[b]);
    out.transfers[b].backward_seconds = median(send_backward[b]);
  }
  return out;
}

}  // namespace pipetrain
