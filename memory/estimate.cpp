#include "memory/estimate.h"

#include <algorithm>
#include <cstdio>

#include "memory/errors.h"
#include "memory/units.h"

namespace pipetrain {

int64_t checked_mul(int64_t a, int64_t b, const char* what) {
  int64_t out = 0;
  if (__builtin_mul_overflow(a, b, &out)) {
    throw InputError(std::string(what) + " overflows 64 bits (" + std::to_string(a) + " x " + std::to_string(b) +
                     "): the model or batch is too large to plan");
  }
  return out;
}

int64_t checked_add(int64_t a, int64_t b, const char* what) {
  int64_t out = 0;
  if (__builtin_add_overflow(a, b, &out)) {
    throw InputError(std::string(what) + " overflows 64 bits: the model or batch is too large to plan");
  }
  return out;
}

StageMemory estimate_stage(const RangeCosts& r, const ModelConfig& cfg, const DeviceSpec& device,
                           const DeviceSpec& optimizer_home, bool streamed, int in_flight, int64_t ring_bytes,
                           const MemoryOptions& options, int lanes) {
  const Dtype compute = options.precision.compute(device.id);
  const int64_t tokens = checked_mul(options.micro_batch_size, cfg.seq_len, "tokens per micro-batch");
  StageMemory m;
  m.compute = compute;
  m.in_flight = in_flight;
  const int64_t layer_bytes = checked_mul(r.max_layer_params, dtype_bytes(compute), "layer bytes");
  if (streamed) {
    m.weights = checked_mul(options.window_layers, layer_bytes, "weight window bytes");
    m.grads = checked_mul(2, layer_bytes, "gradient window bytes");
    // In RAM the gradients arrive in the masters' float32 (stages/streamed_stage.h), whatever c is.
    m.host_grads = options.layerwise_update ? 0 : checked_mul(r.params, dtype_bytes(Dtype::kFloat32), "gradient bytes");
  } else {
    m.weights = checked_mul(r.params, dtype_bytes(compute), "weight bytes");
    // A stage with lanes keeps a set of gradients per lane (memory/stage_map.h).
    m.grads = checked_mul(m.weights, lanes, "gradient bytes");
  }
  const OptimizerMethod method =
      optimizer_method(options.optimizer, compute, optimizer_home.id.is_cpu(), optimizer_home.id == device.id);
  m.master = method.masters ? checked_mul(r.params, dtype_bytes(Dtype::kFloat32), "master weight bytes") : 0;
  m.optimizer = checked_mul(r.params, method.state_bytes_per_param, "optimizer state bytes");
  const int64_t held = checked_mul(in_flight, tokens, "activations");
  // What one op holds while it runs, once per lane computing at once.
  const int64_t running = checked_mul(lanes, tokens, "activations");
  if (options.checkpointing) {
    // Each layer's input per micro-batch in flight; during a backward, one layer at a time is
    // recomputed with its graph (stages/stage.h): the largest layer's saved + transient on top.
    m.activations = checked_add(checked_add(checked_mul(held, r.input_bytes_per_token_sum, "activations"),
                                            checked_mul(running, r.max_layer_bytes_per_token, "activations"),
                                            "activations"),
                                r.max_transient_bytes_fixed, "activations");
  } else {
    m.activations = checked_add(checked_add(checked_mul(held, r.saved_bytes_per_token, "activations"),
                                            checked_mul(running, r.max_transient_bytes_per_token, "activations"),
                                            "activations"),
                                r.max_transient_bytes_fixed, "activations");
  }
  // A GPU stage whose optimizer lives in RAM streams its gradients out and its weights back
  // through two pinned slots of its largest layer (one copying while the other is stepped); a
  // streamed stage has two such slots each way.
  const bool optimizer_in_ram = device.id != optimizer_home.id;
  const int64_t optimizer_staging =
      optimizer_in_ram ? checked_mul(streamed ? 4 : 2, layer_bytes, "staging") : 0;
  m.buffers = checked_add(ring_bytes, optimizer_staging, "pinned bytes");

  // Each part where it lives, with that device's slack: the stage's device, its optimizer's home,
  // and pinned host memory (the CPU's). Parts on one device share one slack.
  struct Part {
    DeviceId device;
    double slack;
    int64_t bytes;
    int64_t StageMemory::*field;
  };
  const DeviceId cpu = DeviceId::cpu();
  const double cpu_slack = device.id.is_cpu() ? device.allocator_slack : optimizer_home.allocator_slack;
  std::vector<Part> parts = {
      {device.id, device.allocator_slack, checked_add(checked_add(m.weights, m.grads, "stage"), m.activations, "stage"),
       &StageMemory::on_device},
      {optimizer_home.id, optimizer_home.allocator_slack,
       checked_add(checked_add(m.master, m.optimizer, "stage"), m.host_grads, "stage"), &StageMemory::on_optimizer_home},
      {cpu, cpu_slack, m.buffers, &StageMemory::on_host_pinned}};
  for (size_t i = 1; i < parts.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (parts[i].device == parts[j].device && parts[i].bytes > 0) {
        parts[j].bytes = checked_add(parts[j].bytes, parts[i].bytes, "stage total");
        parts[i].bytes = 0;
      }
    }
  }
  for (const Part& part : parts) {
    const int64_t slack = static_cast<int64_t>(static_cast<double>(part.bytes) * part.slack);
    m.*part.field = checked_add(part.bytes, slack, "stage total");
    m.slack = checked_add(m.slack, slack, "stage total");
    m.total = checked_add(m.total, m.*part.field, "stage total");
  }
  return m;
}

void tally_stage(DeviceTally& tally, const StageMemory& m, DeviceId device, DeviceId optimizer_home, int host) {
  tally.add(device, m.on_device, host);
  if (m.on_optimizer_home > 0) tally.add(optimizer_home, m.on_optimizer_home, host);
  if (m.on_host_pinned > 0) tally.add(DeviceId::cpu(), m.on_host_pinned, host);
  if (m.on_host > 0) tally.add(DeviceId::cpu(), m.on_host, host);
  tally.add_pinned(m.buffers);
}

const LayerPrefix& PrefixByDtype::operator()(Dtype dtype) {
  for (const auto& [d, prefix] : prefixes_) {
    if (d == dtype) return prefix;
  }
  prefixes_.emplace_back(dtype, LayerPrefix(describe_model(with_dtype(model_, dtype))));
  return prefixes_.back().second;
}

int64_t BoundaryRings::pinned_bytes() const {
  return checked_mul(checked_add(forward_slots, backward_slots, "ring slots"), slot_bytes, "pinned ring bytes");
}

BoundaryRings boundary_rings(int b, DeviceId sender, DeviceId receiver, int sender_in_flight, int receiver_in_flight,
                             int64_t slot_bytes, int ring_slots) {
  BoundaryRings r;
  if (!crosses_host_boundary(sender, receiver)) return r;
  r.staged = true;
  r.slot_bytes = slot_bytes;
  const bool into_receiver = receiver.has_own_memory();  // forward copies go into the device
  r.host_stage = into_receiver ? b : b + 1;
  r.forward_slots = into_receiver ? ring_slots : receiver_in_flight + 1;
  r.backward_slots = into_receiver ? sender_in_flight + 1 : ring_slots;
  return r;
}

std::vector<int64_t> boundary_bytes_per_token(PrefixByDtype& prefixes, const StageMap& map, const Precision& precision) {
  std::vector<int64_t> bytes;
  for (int b = 0; b + 1 < map.num_stages(); ++b) {
    const StageSpec& sender = map.stages[static_cast<size_t>(b)];
    const StageSpec& receiver = map.stages[static_cast<size_t>(b + 1)];
    const LayerPrefix& prefix = prefixes(boundary_dtype(precision.compute(sender.device), precision.compute(receiver.device)));
    bytes.push_back(prefix.range(sender.last, sender.last).output_bytes_per_token);
  }
  return bytes;
}

std::vector<BoundaryRings> stage_map_rings(PrefixByDtype& prefixes, const ModelConfig& model, const StageMap& map,
                                           const std::vector<int>& in_flight, const MemoryOptions& options) {
  const int64_t tokens = checked_mul(options.micro_batch_size, model.seq_len, "tokens per micro-batch");
  const std::vector<int64_t> per_token = boundary_bytes_per_token(prefixes, map, options.precision);
  std::vector<BoundaryRings> rings;
  for (int b = 0; b + 1 < map.num_stages(); ++b) {
    const size_t i = static_cast<size_t>(b);
    rings.push_back(boundary_rings(b, map.stages[i].device, map.stages[i + 1].device, in_flight[i], in_flight[i + 1],
                                   checked_mul(tokens, per_token[i], "ring slot bytes"), options.ring_slots));
  }
  return rings;
}

DeviceTally::DeviceTally(const HardwareSpec& hardware, int hosts)
    : hardware_(hardware), hosts_(hosts), need_(hardware.devices.size() * static_cast<size_t>(hosts), 0),
      used_(hardware.devices.size() * static_cast<size_t>(hosts), false) {}

void DeviceTally::add(DeviceId device, int64_t bytes, int host) {
  for (size_t d = 0; d < hardware_.devices.size(); ++d) {
    if (hardware_.devices[d].id != device) continue;
    const size_t i = static_cast<size_t>(host) * hardware_.devices.size() + d;
    need_[i] = checked_add(need_[i], bytes, "device need");
    used_[i] = true;
    return;
  }
  throw InputError("device '" + device.name() + "' is not in hardware '" + hardware_.name + "'");
}

void DeviceTally::add_pinned(int64_t bytes) { pinned_ = checked_add(pinned_, bytes, "pinned bytes"); }

std::vector<DeviceMemory> DeviceTally::devices() const {
  std::vector<DeviceMemory> out;
  for (size_t i = 0; i < need_.size(); ++i) {
    const size_t d = i % hardware_.devices.size();
    const DeviceSpec& spec = hardware_.devices[d];
    DeviceMemory dm;
    dm.id = spec.id;
    dm.host = static_cast<int>(i / hardware_.devices.size());
    dm.several_hosts = hosts_ > 1;
    dm.memory_bytes = spec.memory_bytes;
    dm.safety_margin = spec.safety_margin;
    dm.budget_bytes = spec.usable_bytes();
    dm.reserved_bytes = spec.reserved_bytes;
    // A device no stage uses needs nothing, except the CPU, whose reserve the process takes anyway.
    dm.need_bytes = used_[i] || spec.id.is_cpu() ? checked_add(spec.reserved_bytes, need_[i], "device need") : 0;
    dm.fits = dm.need_bytes <= dm.budget_bytes;
    out.push_back(dm);
  }
  return out;
}

bool DeviceTally::fits() const {
  if (pinned_ > hardware_.pinned_bytes) return false;
  for (size_t i = 0; i < need_.size(); ++i) {
    const DeviceSpec& spec = hardware_.devices[i % hardware_.devices.size()];
    if ((used_[i] || spec.id.is_cpu()) && spec.reserved_bytes + need_[i] > spec.usable_bytes()) return false;
  }
  return true;
}

MemoryEstimate estimate_memory(const ModelDesc& model, const HardwareSpec& hw, const StageMap& map,
                               const std::vector<int>& in_flight, const MemoryOptions& options) {
  PrefixByDtype prefixes(model.config);
  MemoryEstimate e;
  e.rings = stage_map_rings(prefixes, model.config, map, in_flight, options);
  e.pinned_budget_bytes = hw.pinned_bytes;
  DeviceTally tally(hw, map.num_hosts());
  const int64_t tokens = checked_mul(options.micro_batch_size, model.config.seq_len, "tokens per micro-batch");
  const std::vector<int64_t> per_token = boundary_bytes_per_token(prefixes, map, options.precision);
  for (int s = 0; s < map.num_stages(); ++s) {
    const StageSpec& st = map.stages[static_cast<size_t>(s)];
    int64_t pinned = 0;
    for (const BoundaryRings& r : e.rings) {
      if (r.host_stage == s) pinned = checked_add(pinned, r.pinned_bytes(), "pinned bytes");
    }
    const Placement place = st.placement();
    const LayerPrefix& prefix = prefixes(options.precision.compute(place.compute));
    StageMemory m = estimate_stage(prefix.range(st.first, st.last), model.config, hw.device(place.compute),
                                   hw.device(place.optimizer), place.streamed(), in_flight[static_cast<size_t>(s)],
                                   pinned, options, st.lanes);
    // What crosses to other hosts: replicas sum a float32 copy of the stage's gradients (runtime/
    // train/replica_sums.h); a boundary to a stage on another host holds one tensor each way.
    if (options.replicas > 1) m.network = checked_mul(prefix.range(st.first, st.last).params, 4, "gradient sum bytes");
    for (int b : {s - 1, s}) {
      if (b < 0 || b + 1 >= map.num_stages() || map.stages[static_cast<size_t>(b)].host == map.stages[static_cast<size_t>(b) + 1].host) continue;
      m.network = checked_add(m.network, checked_mul(2 * tokens, per_token[static_cast<size_t>(b)], "network buffers"), "network buffers");
    }
    m.on_host = m.network;
    m.total = checked_add(m.total, m.network, "stage total");
    tally_stage(tally, m, place.compute, place.optimizer, st.host);
    e.stages.push_back(m);
  }
  e.devices = tally.devices();
  e.pinned_need_bytes = tally.pinned_need_bytes();
  e.fits = tally.fits();
  return e;
}

namespace {

std::string pad(const std::string& text, size_t width, bool right = true) {
  if (text.size() >= width) return text;
  return right ? std::string(width - text.size(), ' ') + text : text + std::string(width - text.size(), ' ');
}

}  // namespace

std::string format_memory_table(const MemoryEstimate& e, const ModelConfig& model, const StageMap& map) {
  constexpr size_t kLabel = 22;
  size_t col = 12;
  for (const StageSpec& st : map.stages) col = std::max(col, describe_range(model, st.first, st.last).size() + 2);
  std::string out = "memory per stage (GiB)\n";
  auto row = [&](const std::string& label, const std::vector<std::string>& cells) {
    out += pad(label, kLabel, false);
    for (const std::string& c : cells) out += pad(c, col);
    out += "\n";
  };
  std::vector<std::string> names, devices, ranges, in_flight;
  for (size_t s = 0; s < map.stages.size(); ++s) {
    names.push_back("stage " + std::to_string(s));
    devices.push_back(map.stages[s].device.name() + (map.stages[s].cores > 0 ? " (" + std::to_string(map.stages[s].cores) + "c)" : "") +
                      (map.stages[s].lanes > 1 ? " x" + std::to_string(map.stages[s].lanes) + " lanes" : ""));
    ranges.push_back(describe_range(model, map.stages[s].first, map.stages[s].last));
    in_flight.push_back(std::to_string(e.stages[s].in_flight));
  }
  row("", names);
  row("device", devices);
  if (map.num_hosts() > 1) {
    std::vector<std::string> hosts;
    for (const StageSpec& st : map.stages) hosts.push_back(std::to_string(st.host));
    row("host", hosts);
  }
  row("layers", ranges);
  // Rows that only a mixed-precision or optimizer-in-RAM plan needs.
  bool any_16_bit = false, any_elsewhere = false, any_master = false, any_streamed = false;
  std::vector<std::string> computes, homes;
  for (size_t s = 0; s < map.stages.size(); ++s) {
    any_16_bit = any_16_bit || is_16_bit(e.stages[s].compute);
    any_master = any_master || e.stages[s].master > 0;
    computes.push_back(dtype_name(e.stages[s].compute));
    const Placement place = map.stages[s].placement();
    any_elsewhere = any_elsewhere || place.optimizer != place.compute;
    any_streamed = any_streamed || place.streamed();
    homes.push_back(place.optimizer.name());
  }
  if (any_16_bit) row("computes in", computes);
  if (any_elsewhere) row("optimizer on", homes);
  if (any_streamed) {
    std::vector<std::string> weights;
    for (const StageSpec& st : map.stages) weights.push_back(st.placement().streamed() ? "streamed" : "resident");
    row("weights", weights);
  }
  row("micro-batches held", in_flight);
  auto component = [&](const std::string& label, int64_t StageMemory::*field) {
    std::vector<std::string> cells;
    for (const StageMemory& m : e.stages) cells.push_back(gib_digits(m.*field));
    row(label, cells);
  };
  component(any_streamed ? "weights (on device)" : "weights", &StageMemory::weights);
  component(any_streamed ? "gradients (on device)" : "gradients", &StageMemory::grads);
  if (any_streamed) component("gradients in RAM", &StageMemory::host_grads);
  if (any_master) component("master weights", &StageMemory::master);
  component("optimizer state", &StageMemory::optimizer);
  component("activations", &StageMemory::activations);
  component("pinned buffers", &StageMemory::buffers);
  bool any_network = false;
  for (const StageMemory& m : e.stages) any_network = any_network || m.network > 0;
  if (any_network) component("network buffers", &StageMemory::network);
  component("allocator slack", &StageMemory::slack);
  out += std::string(kLabel + col * map.stages.size(), '-') + "\n";
  component("total", &StageMemory::total);

  out += "\nper device            need (GiB)   budget (GiB)                  verdict\n";
  for (const DeviceMemory& d : e.devices) {
    char line[256];
    std::snprintf(line, sizeof(line), "%-22s%10s   %8s = %s x %.2f %s  %s\n", d.name().c_str(), gib_digits(d.need_bytes).c_str(),
                  gib_digits(d.budget_bytes).c_str(), gib_digits(d.memory_bytes).c_str(), d.safety_margin,
                  d.reserved_bytes > 0 ? ("(" + gib_digits(d.reserved_bytes) + " reserved in need)").c_str() : "",
                  d.fits ? "fits" : ("DOES NOT FIT (" + gib_digits(d.need_bytes - d.budget_bytes) + " over)").c_str());
    out += line;
  }
  char line[160];
  const bool pinned_fits = e.pinned_need_bytes <= e.pinned_budget_bytes;
  std::snprintf(line, sizeof(line), "%-22s%10s   %8s                      %s\n", "pinned (host)",
                gib_digits(e.pinned_need_bytes).c_str(), gib_digits(e.pinned_budget_bytes).c_str(),
                pinned_fits ? "fits" : "DOES NOT FIT");
  out += line;
  return out;
}

}  // namespace pipetrain
