#include "runtime/io/trace.h"

#include <nlohmann/json.hpp>

#include <map>

#include "runtime/io/atomic_file.h"

namespace pipetrain {
namespace {

std::string span_name(const SimEvent& e) {
  // A streamed stage's spans are per layer (over all micro-batches): "F L3", "load L3".
  const std::string layer = " L" + std::to_string(e.layer);
  switch (e.kind) {
    case EventKind::kForward: return e.layer >= 0 ? "F" + layer : "F" + std::to_string(e.micro_batch);
    case EventKind::kBackward: return e.layer >= 0 ? "B" + layer : "B" + std::to_string(e.micro_batch);
    case EventKind::kSendActivation: return "act " + std::to_string(e.micro_batch);
    case EventKind::kSendGradient: return "grad " + std::to_string(e.micro_batch);
    case EventKind::kOptimizer: return e.layer >= 0 ? "optimizer" + layer : "optimizer";
    case EventKind::kGradNorm: return "gradient norm";
    case EventKind::kLoadWeights: return "load" + layer;
    case EventKind::kWeightGradients: return "weight grads" + layer;
  }
  return "?";
}

}  // namespace

std::string chrome_trace_json(const std::vector<Timeline>& timelines) {
  nlohmann::json events = nlohmann::json::array();
  for (size_t p = 0; p < timelines.size(); ++p) {
    const int pid = static_cast<int>(p) + 1;
    events.push_back({{"ph", "M"}, {"name", "process_name"}, {"pid", pid}, {"args", {{"name", timelines[p].name}}}});
    events.push_back({{"ph", "M"}, {"name", "process_sort_index"}, {"pid", pid}, {"args", {{"sort_index", pid}}}});
    // Tracks: one per stage (named with the resource it computes on), then one per transfer direction.
    std::map<std::string, int> track;
    auto track_of = [&](const SimEvent& e) {
      const bool transfer = e.kind == EventKind::kSendActivation || e.kind == EventKind::kSendGradient;
      const std::string name = transfer ? e.resource
                                        : "stage " + std::to_string(e.stage) + (e.resource.empty() ? "" : " on " + e.resource);
      auto it = track.find(name);
      if (it != track.end()) return it->second;
      const int tid = static_cast<int>(track.size()) + 1 + (transfer ? 1000 : 0);
      track[name] = tid;
      events.push_back({{"ph", "M"}, {"name", "thread_name"}, {"pid", pid}, {"tid", tid}, {"args", {{"name", name}}}});
      events.push_back({{"ph", "M"}, {"name", "thread_sort_index"}, {"pid", pid}, {"tid", tid}, {"args", {{"sort_index", tid}}}});
      return tid;
    };
    for (const SimEvent& e : timelines[p].events) {
      nlohmann::json span = {{"ph", "X"},
                             {"name", span_name(e)},
                             {"cat", event_kind_name(e.kind)},
                             {"pid", pid},
                             {"tid", track_of(e)},
                             {"ts", e.start * 1e6},
                             {"dur", (e.end - e.start) * 1e6},
                             {"args", {{"stage", e.stage}, {"micro_batch", e.micro_batch}}}};
      events.push_back(std::move(span));
    }
  }
  return nlohmann::json{{"traceEvents", events}, {"displayTimeUnit", "ms"}}.dump();
}

void write_chrome_trace(const std::string& path, const std::vector<Timeline>& timelines) {
  write_file_atomically(path, chrome_trace_json(timelines));
}

}  // namespace pipetrain
