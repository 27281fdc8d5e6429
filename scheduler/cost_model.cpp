#include "scheduler/cost_model.h"

#include "scheduler/cores.h"

namespace pipetrain {

std::string profile_key(const ModelConfig& model, int64_t micro_batch_size) {
  return architecture_key(model) + " b" + std::to_string(micro_batch_size);
}

StageTimer::StageTimer(const ModelConfig& model, const HardwareSpec& hardware, const PlanOptions& options)
    : model_(model), hardware_(hardware), options_(options), prefix_(describe_model(model)) {
  if (hardware.measured.model_key != profile_key(model, options.micro_batch_size)) return;
  const size_t layers = static_cast<size_t>(model.num_model_layers());
  for (const LayerTimes& e : hardware.measured.entries) {
    if (e.forward_seconds.size() != layers) continue;
    Sums sums{e.device, e.cores, {0.0}, {0.0}, {0.0}};
    for (size_t i = 0; i < layers; ++i) {
      sums.forward.push_back(sums.forward.back() + e.forward_seconds[i]);
      sums.backward.push_back(sums.backward.back() + e.backward_seconds[i]);
      sums.optimizer.push_back(sums.optimizer.back() + e.optimizer_seconds[i]);
    }
    sums_.push_back(std::move(sums));
  }
}

const StageTimer::Sums* StageTimer::find(DeviceId device, int cores) const {
  for (const Sums& s : sums_) {
    if (s.device == device && (!device.is_cpu() || s.cores == cores)) return &s;
  }
  return nullptr;
}

StageTiming StageTimer::time(DeviceId device, int cores, int64_t first, int64_t last, bool checkpointing) const {
  if (const Sums* s = find(device, cores)) {
    const size_t a = static_cast<size_t>(first), b = static_cast<size_t>(last) + 1;
    StageTiming t;
    t.forward_seconds = s->forward[b] - s->forward[a];
    t.backward_seconds = s->backward[b] - s->backward[a] + (checkpointing ? t.forward_seconds : 0.0);
    t.optimizer_seconds = s->optimizer[b] - s->optimizer[a];
    return t;
  }
  PlanOptions o = options_;
  o.checkpointing = checkpointing;
  const DeviceSpec& d = hardware_.device(device);
  return stage_timing(prefix_.range(first, last), model_, d, "", device.is_cpu() ? cores : 0, o);
}

StageTiming stage_timing(const RangeCosts& range, const ModelConfig& model, const DeviceSpec& device,
                         const std::string& resource, int cores, const PlanOptions& options) {
  const double tokens = static_cast<double>(options.micro_batch_size * model.seq_len);
  const double rate = device.flops_per_s_with(cores > 0 ? cores : device.cores);
  StageTiming t;
  t.resource = resource;
  t.forward_seconds = range.forward_flops_per_token * tokens / rate;
  t.backward_seconds = (range.backward_flops_per_token +
                        (options.checkpointing ? range.forward_flops_per_token : 0.0)) * tokens / rate;
  return t;
}

const LinkSpec* copy_link(const HardwareSpec& hw, DeviceId from, DeviceId to) {
  if (from == to || (!from.has_own_memory() && !to.has_own_memory())) return nullptr;
  return hw.link(from, to);
}

double link_seconds(const LinkSpec& link, double bytes) { return bytes / link.bytes_per_s + link.latency_s; }

TransferTiming transfer_timing(int64_t boundary_bytes_per_token, const ModelConfig& model, const HardwareSpec& hw,
                               DeviceId from, DeviceId to, const PlanOptions& options) {
  TransferTiming t;
  const double bytes = static_cast<double>(boundary_bytes_per_token) *
                       static_cast<double>(options.micro_batch_size * model.seq_len);
  if (const LinkSpec* forward = copy_link(hw, from, to)) {
    t.forward_resource = link_resource(from, to);
    t.forward_seconds = link_seconds(*forward, bytes);
  }
  if (const LinkSpec* backward = copy_link(hw, to, from)) {
    t.backward_resource = link_resource(to, from);
    t.backward_seconds = link_seconds(*backward, bytes);
  }
  return t;
}

std::vector<StageTiming> stage_timings(const ModelConfig& model, const HardwareSpec& hw, const StageMap& map,
                                       const PlanOptions& options) {
  // Stages with cores: 0 share the cores no stage owns (scheduler/cores.h).
  int owned = 0;
  for (const StageSpec& st : map.stages) owned += st.cores;
  const int pool = hw.cpu().cores - owned;
  const StageTimer timer(model, hw, options);
  std::vector<StageTiming> out;
  for (int s = 0; s < map.num_stages(); ++s) {
    const StageSpec& st = map.stages[static_cast<size_t>(s)];
    out.push_back(timer.time(st.device, st.device.is_cpu() && st.cores == 0 ? pool : st.cores, st.first, st.last,
                             options.checkpointing));
    out.back().resource = compute_resource(st, s);
  }
  return out;
}

std::vector<TransferTiming> transfer_timings(const LayerPrefix& prefix, const ModelConfig& model, const HardwareSpec& hw,
                                             const StageMap& map, const PlanOptions& options) {
  std::vector<TransferTiming> out;
  for (int s = 0; s + 1 < map.num_stages(); ++s) {
    const StageSpec& st = map.stages[static_cast<size_t>(s)];
    out.push_back(transfer_timing(prefix.range(st.last, st.last).output_bytes_per_token, model, hw, st.device,
                                  map.stages[static_cast<size_t>(s + 1)].device, options));
  }
  return out;
}

}  // namespace pipetrain
