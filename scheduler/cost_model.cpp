#include "scheduler/cost_model.h"

#include "memory/param_count.h"

#include <algorithm>

#include "memory/errors.h"
#include "scheduler/cores.h"

namespace pipetrain {

std::string profile_key(const ModelConfig& model, int64_t micro_batch_size) {
  return architecture_key(model) + " b" + std::to_string(micro_batch_size);
}

StageTimer::StageTimer(const ModelConfig& model, const HardwareSpec& hardware, const PlanOptions& options)
    : model_(model), hardware_(hardware), options_(options), prefix_(describe_model(model)) {
  for (const DeviceSpec& d : hardware.devices) {
    if (!d.id.has_own_memory() || hardware.link(DeviceId::cpu(), d.id) == nullptr ||
        hardware.link(d.id, DeviceId::cpu()) == nullptr) {
      continue;
    }
    StreamSums sums{d.id, {0.0}, {0.0}, {0.0}};
    for (int64_t l = 0; l < model.num_model_layers(); ++l) {
      const StreamedLayerTiming t = streamed_layer(d.id, l);
      sums.load.push_back(sums.load.back() + t.load_seconds);
      sums.gradient.push_back(sums.gradient.back() + t.gradient_seconds);
      sums.step.push_back(sums.step.back() + t.step_seconds);
    }
    stream_sums_.push_back(std::move(sums));
  }
  // A profile measures the CPU in the dtype it computes in.
  if (hardware.measured.model_key != profile_key(with_dtype(model, options.precision.cpu), options.micro_batch_size)) return;
  const size_t layers = static_cast<size_t>(model.num_model_layers());
  for (const LayerTimes& e : hardware.measured.entries) {
    if (e.forward_seconds.size() != layers) continue;
    Sums sums{e.device, e.cores, {0.0}, {0.0}, {0.0}, e.alone_ratio};
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

StageTiming StageTimer::time(const Placement& place, int cores, int64_t first, int64_t last, bool checkpointing,
                             bool per_layer) const {
  const RangeCosts range = prefix_.range(first, last);
  const DeviceSpec& d = hardware_.device(place.compute);
  const Sums* s = find(place.compute, cores);
  StageTiming t;
  if (s != nullptr) {
    const size_t a = static_cast<size_t>(first), b = static_cast<size_t>(last) + 1;
    t.forward_seconds = s->forward[b] - s->forward[a];
    t.backward_seconds = s->backward[b] - s->backward[a] + (checkpointing ? t.forward_seconds : 0.0);
    t.optimizer_seconds = s->optimizer[b] - s->optimizer[a];
    t.alone_ratio = s->alone_ratio;
    t.norm_seconds = norm_seconds(range, d, options_);
  } else {
    PlanOptions o = options_;
    o.checkpointing = checkpointing;
    t = stage_timing(range, model_, d, "", place.compute.is_cpu() ? cores : 0, o);
    t.optimizer_seconds = optimizer_seconds(range, hardware_, place, o);
  }
  if (place.streamed()) time_streamed(t, place.compute, s, first, last, checkpointing, per_layer);
  return t;
}

double StageTimer::lane_add_seconds(int64_t first, int64_t last) const {
  return pipetrain::lane_add_seconds(prefix_.range(first, last).params, hardware_.cpu(), options_);
}

StreamedLayerTiming StageTimer::streamed_layer(DeviceId device, int64_t l) const {
  const Placement place{device, DeviceId::cpu(), DeviceId::cpu()};
  const DeviceSpec& cpu = hardware_.cpu();
  const Dtype compute = options_.precision.compute(device);
  const double c = static_cast<double>(dtype_bytes(compute));
  const double params = static_cast<double>(prefix_.range(l, l).params);
  const double step_bytes = optimizer_step_bytes_per_param(options_.optimizer, compute, place) + c;  // + its norm
  StreamedLayerTiming t;
  t.load_seconds = std::max(link_seconds(*hardware_.link(DeviceId::cpu(), device), params * c),
                            params * (4.0 + c) / cpu.memory_bytes_per_s);
  t.gradient_seconds = link_seconds(*hardware_.link(device, DeviceId::cpu()), params * c);
  t.step_seconds = options_.layerwise_update ? params * step_bytes / cpu.memory_bytes_per_s : 0.0;
  return t;
}

StageTimer::StreamedWork StageTimer::streamed_work(DeviceId device, int64_t first, int64_t last) const {
  for (const StreamSums& s : stream_sums_) {
    if (s.device != device) continue;
    const size_t a = static_cast<size_t>(first), b = static_cast<size_t>(last) + 1;
    return {s.load[b] - s.load[a], s.gradient[b] - s.gradient[a], s.step[b] - s.step[a]};
  }
  throw InputError("weights cannot be streamed into " + device.name() + ": hardware '" + hardware_.name +
                   "' has no link between it and the cpu both ways");
}

void StageTimer::time_streamed(StageTiming& t, DeviceId device, const Sums* measured, int64_t first, int64_t last,
                               bool checkpointing, bool per_layer) const {
  const DeviceSpec& gpu = hardware_.device(device);
  const DeviceSpec& cpu = hardware_.cpu();
  const Placement place{device, DeviceId::cpu(), DeviceId::cpu()};
  const Dtype compute = options_.precision.compute(device);
  const double c = static_cast<double>(dtype_bytes(compute));
  const double tokens = static_cast<double>(options_.micro_batch_size * model_.seq_len);
  const double rate = gpu.flops_per_s_for(compute, 0);
  StreamedTiming& st = t.streamed;
  st.window_layers = options_.window_layers;
  st.load_resource = link_resource(DeviceId::cpu(), device);
  st.gradient_resource = link_resource(device, DeviceId::cpu());
  st.step_resource = "optimizer (cpu)";
  for (int64_t l = first; per_layer && l <= last; ++l) {
    const RangeCosts layer = prefix_.range(l, l);
    StreamedLayerTiming lt = streamed_layer(device, l);
    if (measured != nullptr) {
      const size_t i = static_cast<size_t>(l);
      lt.forward_seconds = measured->forward[i + 1] - measured->forward[i];
      lt.backward_seconds = measured->backward[i + 1] - measured->backward[i];
    } else {
      lt.forward_seconds = layer.forward_flops_per_token * tokens / rate;
      lt.backward_seconds = layer.backward_flops_per_token * tokens / rate;
    }
    if (checkpointing) lt.backward_seconds += lt.forward_seconds;
    st.layers.push_back(lt);
  }
  // The gradients are in RAM: after the pipeline, their norm and the step run there (or, stepped
  // per layer, nothing is left for the optimizer phase).
  const double params = static_cast<double>(prefix_.range(first, last).params);
  const double step_bytes = optimizer_step_bytes_per_param(options_.optimizer, compute, place);
  t.norm_seconds = options_.layerwise_update ? 0.0 : params * c / cpu.memory_bytes_per_s;
  t.optimizer_seconds = options_.layerwise_update ? 0.0 : params * step_bytes / cpu.memory_bytes_per_s;
}

StageTiming stage_timing(const RangeCosts& range, const ModelConfig& model, const DeviceSpec& device,
                         const std::string& resource, int cores, const PlanOptions& options) {
  const double tokens = static_cast<double>(options.micro_batch_size * model.seq_len);
  const double rate = device.flops_per_s_for(options.precision.compute(device.id), cores > 0 ? cores : device.cores);
  StageTiming t;
  t.resource = resource;
  t.forward_seconds = range.forward_flops_per_token * tokens / rate;
  t.backward_seconds = (range.backward_flops_per_token +
                        (options.checkpointing ? range.forward_flops_per_token : 0.0)) * tokens / rate;
  t.norm_seconds = norm_seconds(range, device, options);
  return t;
}

double optimizer_step_bytes_per_param(const OptimizerConfig& optimizer, Dtype compute, const Placement& place) {
  const OptimizerMethod method =
      optimizer_method(optimizer, compute, place.optimizer.is_cpu(), place.optimizer == place.compute);
  const double state = static_cast<double>(method.state_bytes_per_param);
  const double c = static_cast<double>(dtype_bytes(compute));
  if (method.fused) {
    // Fused (stages/kernels/cpu_adamw.h): master read and written, each moment read and written,
    // the gradient read, and with masters the compute weights written.
    return 2.0 * 4.0 + 2.0 * state + c + (method.masters && !place.streamed() ? c : 0.0);
  }
  // LibTorch's optimizer, a pass per operation over float32 (scaled to its state's dtype); with
  // masters, the gradient is converted first (c read, 4 written) and the weights refreshed after
  // (4 read, c written).
  const double width = static_cast<double>(dtype_bytes(method.masters ? Dtype::kFloat32 : compute)) / 4.0;
  return optimizer.kind.def().library_step_bytes(optimizer) * width + (method.masters ? 2.0 * (c + 4.0) : 0.0);
}

double lane_add_seconds(int64_t params, const DeviceSpec& cpu, const PlanOptions& options) {
  const double bytes = static_cast<double>(params) * static_cast<double>(dtype_bytes(options.precision.compute(cpu.id)));
  return 3.0 * bytes / cpu.memory_bytes_per_s;
}

double norm_seconds(const RangeCosts& range, const DeviceSpec& device, const PlanOptions& options) {
  const double bytes = static_cast<double>(range.params) * static_cast<double>(dtype_bytes(options.precision.compute(device.id)));
  return bytes / device.memory_bytes_per_s;
}

double optimizer_seconds(const RangeCosts& range, const HardwareSpec& hw, const Placement& place,
                         const PlanOptions& options) {
  const DeviceId device = place.compute, home = place.optimizer;
  const Dtype compute = options.precision.compute(device);
  const double params = static_cast<double>(range.params);
  const double step = params * optimizer_step_bytes_per_param(options.optimizer, compute, place) /
                      hw.device(home).memory_bytes_per_s;
  if (home == device) return step;
  // Gradients out and updated weights back, a layer at a time, overlapped with the step: the
  // longest of the three, plus one layer's copies that cannot overlap (the first out, the last back).
  const double bytes = params * static_cast<double>(dtype_bytes(compute));
  const double layer_bytes = static_cast<double>(range.max_layer_params) * static_cast<double>(dtype_bytes(compute));
  const LinkSpec& out = *hw.link(device, home);
  const LinkSpec& back = *hw.link(home, device);
  return std::max({step, link_seconds(out, bytes), link_seconds(back, bytes)}) + link_seconds(out, layer_bytes) +
         link_seconds(back, layer_bytes);
}

const LinkSpec* copy_link(const HardwareSpec& hw, DeviceId from, DeviceId to) {
  if (from == to || (!from.has_own_memory() && !to.has_own_memory())) return nullptr;
  return hw.link(from, to);
}

double link_seconds(const LinkSpec& link, double bytes) { return bytes / link.bytes_per_s + link.latency_s; }

double boundary_copy_seconds(const HardwareSpec& hw, DeviceId from, DeviceId to, double bytes) {
  const LinkSpec* link = copy_link(hw, from, to);
  return link == nullptr ? 0.0 : link_seconds(*link, bytes);
}

double staging_write_seconds(const HardwareSpec& hw, DeviceId from, DeviceId to, double bytes) {
  // The sending op writes its output into a pinned ring slot (runtime/train/pipeline_trainer.cpp
  // to_boundary): read and written once.
  if (copy_link(hw, from, to) == nullptr || from.has_own_memory() || !to.has_own_memory()) return 0.0;
  return 2.0 * bytes / hw.cpu().memory_bytes_per_s;
}

void charge_staging_writes(const HardwareSpec& hw, const StageMap& map, const std::vector<double>& boundary_bytes,
                           std::vector<StageTiming>& stages) {
  for (size_t b = 0; b + 1 < map.stages.size(); ++b) {
    const DeviceId from = map.stages[b].device, to = map.stages[b + 1].device;
    stages[b].forward_seconds += staging_write_seconds(hw, from, to, boundary_bytes[b]);
    stages[b + 1].backward_seconds += staging_write_seconds(hw, to, from, boundary_bytes[b]);
  }
}

double network_seconds(const HardwareSpec& hw, double bytes) {
  if (!hw.network.described()) return 0.0;
  return bytes / hw.network.bytes_per_s + hw.network.latency_s;
}

double replica_sum_seconds(const HardwareSpec& hw, int64_t params, int64_t replicas) {
  if (replicas <= 1) return 0.0;
  const double bytes = 4.0 * static_cast<double>(params);  // float32 (runtime/train/replica_sums.h)
  const double r = static_cast<double>(replicas);
  // Gathered into one buffer and written back: read and written once each way in host memory.
  const DeviceSpec& cpu = hw.cpu();
  const double host = cpu.memory_bytes_per_s > 0.0 ? 4.0 * bytes / cpu.memory_bytes_per_s : 0.0;
  if (!hw.network.described()) return host;
  // A ring all-reduce: every replica sends and receives 2 (R - 1) / R of the buffer, in 2 (R - 1)
  // rounds.
  return host + 2.0 * (r - 1.0) / r * bytes / hw.network.bytes_per_s + 2.0 * (r - 1.0) * hw.network.latency_s;
}

int64_t range_param_count(const ModelConfig& model, int64_t first, int64_t last) {
  int64_t params = 0;
  for (int64_t i = first; i <= last; ++i) params += layer_param_count(model, i);
  return params;
}

TransferTiming transfer_timing(int64_t boundary_bytes_per_token, const ModelConfig& model, const HardwareSpec& hw,
                               DeviceId from, DeviceId to, const PlanOptions& options) {
  TransferTiming t;
  const double bytes = static_cast<double>(boundary_bytes_per_token) *
                       static_cast<double>(options.micro_batch_size * model.seq_len);
  if (copy_link(hw, from, to) != nullptr) {
    t.forward_resource = link_resource(from, to);
    t.forward_seconds = boundary_copy_seconds(hw, from, to, bytes);
  }
  if (copy_link(hw, to, from) != nullptr) {
    t.backward_resource = link_resource(to, from);
    t.backward_seconds = boundary_copy_seconds(hw, to, from, bytes);
  }
  return t;
}

std::vector<StageTiming> stage_timings(const ModelConfig& model, const HardwareSpec& hw, const StageMap& map,
                                       const PlanOptions& options) {
  // Stages with cores: 0 share the cores no stage of their host owns (scheduler/cores.h).
  std::vector<int> owned(static_cast<size_t>(map.num_hosts()), 0);
  for (const StageSpec& st : map.stages) owned[static_cast<size_t>(st.host)] += st.cores;
  const StageTimer timer(model, hw, options);
  std::vector<StageTiming> out;
  for (int s = 0; s < map.num_stages(); ++s) {
    const StageSpec& st = map.stages[static_cast<size_t>(s)];
    const int pool = hw.cpu().cores - owned[static_cast<size_t>(st.host)];
    const int cores = st.device.is_cpu() && st.cores == 0 ? pool : st.cores;
    out.push_back(timer.time(st.placement(), st.lanes > 1 ? std::max(1, cores / st.lanes) : cores, st.first, st.last,
                             options.checkpointing, /*per_layer=*/true));
    out.back().resource = compute_resource(st, s);
    if (options.replicas > 1) {
      out.back().sum_seconds = replica_sum_seconds(hw, range_param_count(model, st.first, st.last), options.replicas);
      out.back().sum_resource = "gradient sums" + (st.host > 0 ? "@host" + std::to_string(st.host) : std::string());
    }
    if (st.lanes > 1) {
      out.back().lanes = st.lanes;
      out.back().backward_seconds += static_cast<double>(st.lanes - 1) * timer.lane_add_seconds(st.first, st.last);
    }
  }
  return out;
}

std::vector<TransferTiming> transfer_timings(const std::vector<int64_t>& boundary_bytes_per_token, const ModelConfig& model,
                                             const HardwareSpec& hw, const StageMap& map, const PlanOptions& options) {
  std::vector<TransferTiming> out;
  for (int s = 0; s + 1 < map.num_stages(); ++s) {
    const int from = map.stages[static_cast<size_t>(s)].host, to = map.stages[static_cast<size_t>(s + 1)].host;
    if (from != to) {  // over the network, each way on the sending host's interface
      const double bytes = static_cast<double>(boundary_bytes_per_token[static_cast<size_t>(s)]) *
                           static_cast<double>(options.micro_batch_size * model.seq_len);
      TransferTiming t;
      t.forward_resource = network_resource(from, to);
      t.backward_resource = network_resource(to, from);
      t.forward_seconds = t.backward_seconds = network_seconds(hw, bytes);
      out.push_back(t);
      continue;
    }
    out.push_back(transfer_timing(boundary_bytes_per_token[static_cast<size_t>(s)], model, hw,
                                  map.stages[static_cast<size_t>(s)].device, map.stages[static_cast<size_t>(s + 1)].device,
                                  options));
  }
  return out;
}

}  // namespace pipetrain
