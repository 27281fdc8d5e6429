#include "scheduler/cost_model.h"

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

const StageTimer::Sums* StageTimer::find(const std::string& device, int cores) const {
  const bool cpu = hardware_.device(device).kind == DeviceKind::kCpu;
  for (const Sums& s : sums_) {
    if (s.device == device && (!cpu || s.cores == cores)) return &s;
  }
  return nullptr;
}

StageTiming StageTimer::time(const std::string& device, int cores, int64_t first, int64_t last,
                             bool checkpointing) const {
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
  return stage_timing(prefix_.range(first, last), model_, d, "", d.kind == DeviceKind::kCpu ? cores : 0, o);
}

std::string stage_resource(const StageSpec& stage, int index, const HardwareSpec& hardware) {
  const DeviceSpec& device = hardware.device(stage.device);
  if (device.kind == DeviceKind::kCpu && stage.cores > 0) return "cpu[" + std::to_string(index) + "]";
  return device.name;
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

TransferTiming transfer_timing(int64_t boundary_bytes_per_token, const ModelConfig& model, const HardwareSpec& hw,
                               const std::string& from, const std::string& to, const PlanOptions& options) {
  TransferTiming t;
  if (from == to) return t;
  const bool host_to_host = hw.device(from).kind == DeviceKind::kCpu && hw.device(to).kind == DeviceKind::kCpu;
  if (host_to_host) return t;
  const double bytes = static_cast<double>(boundary_bytes_per_token) *
                       static_cast<double>(options.micro_batch_size * model.seq_len);
  const LinkSpec* forward = hw.link(from, to);
  const LinkSpec* backward = hw.link(to, from);
  if (forward != nullptr) {
    t.forward_resource = from + "->" + to;
    t.forward_seconds = bytes / forward->bytes_per_s + forward->latency_s;
  }
  if (backward != nullptr) {
    t.backward_resource = to + "->" + from;
    t.backward_seconds = bytes / backward->bytes_per_s + backward->latency_s;
  }
  return t;
}

std::vector<StageTiming> stage_timings(const LayerPrefix& prefix, const ModelConfig& model, const HardwareSpec& hw,
                                       const StageMap& map, const PlanOptions& options) {
  // Stages with cores: 0 share the cores no stage owns (scheduler/cores.h).
  int owned = 0;
  for (const StageSpec& st : map.stages) owned += st.cores;
  const int pool = hw.device("cpu").cores - owned;
  (void)prefix;
  const StageTimer timer(model, hw, options);
  std::vector<StageTiming> out;
  for (int s = 0; s < map.num_stages(); ++s) {
    const StageSpec& st = map.stages[static_cast<size_t>(s)];
    const bool cpu = hw.device(st.device).kind == DeviceKind::kCpu;
    out.push_back(timer.time(st.device, cpu && st.cores == 0 ? pool : st.cores, st.first, st.last, options.checkpointing));
    out.back().resource = stage_resource(st, s, hw);
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
