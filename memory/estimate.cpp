#include "memory/estimate.h"

#include <algorithm>
#include <cstdio>

#include "memory/errors.h"
#include "memory/machine_probe.h"

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

StageMemory estimate_stage(const RangeCosts& r, const ModelConfig& cfg, const DeviceSpec& device, int in_flight,
                           int64_t pinned_per_token, const PlanOptions& options) {
  const int64_t tokens = checked_mul(options.micro_batch_size, cfg.seq_len, "tokens per micro-batch");
  StageMemory m;
  m.in_flight = in_flight;
  m.weights = checked_mul(r.params, dtype_bytes(cfg.dtype), "weight bytes");
  m.grads = m.weights;
  m.optimizer = checked_mul(r.params, optimizer_state_bytes_per_param(options.optimizer), "optimizer state bytes");
  const int64_t held = checked_mul(in_flight, tokens, "activations");
  if (options.checkpointing) {
    // Each layer's input per micro-batch in flight; during a backward, one layer at a time is
    // recomputed with its graph (stages/stage.h): the largest layer's saved + transient on top.
    m.activations = checked_add(checked_add(checked_mul(held, r.input_bytes_per_token_sum, "activations"),
                                            checked_mul(tokens, r.max_layer_bytes_per_token, "activations"),
                                            "activations"),
                                r.max_transient_bytes_fixed, "activations");
  } else {
    m.activations = checked_add(checked_add(checked_mul(held, r.saved_bytes_per_token, "activations"),
                                            checked_mul(tokens, r.max_transient_bytes_per_token, "activations"),
                                            "activations"),
                                r.max_transient_bytes_fixed, "activations");
  }
  // Per boundary with a GPU: the ring this stage sends through (ring_slots, free again once its copy
  // lands) and the ring it receives into, whose slots it keeps until the micro-batch's backward
  // (in_flight + 1: one more for the copy arriving meanwhile).
  const int64_t slots = checked_add(options.ring_slots, checked_add(in_flight, 1, "ring slots"), "ring slots");
  m.buffers = checked_mul(checked_mul(slots, tokens, "buffers"), pinned_per_token, "buffers");
  int64_t sum = 0;
  for (int64_t part : {m.weights, m.grads, m.optimizer, m.activations, m.buffers}) sum = checked_add(sum, part, "stage total");
  m.slack = static_cast<int64_t>(static_cast<double>(sum) * device.allocator_slack);
  m.total = checked_add(sum, m.slack, "stage total");
  return m;
}

int64_t pinned_bytes_per_token(const LayerPrefix& prefix, const HardwareSpec& hw, const StageMap& map, int s) {
  const StageSpec& st = map.stages[static_cast<size_t>(s)];
  if (hw.device(st.device).kind != DeviceKind::kCpu) return 0;
  int64_t total = 0;
  if (s > 0 && hw.device(map.stages[static_cast<size_t>(s - 1)].device).kind != DeviceKind::kCpu) {
    total += prefix.range(st.first, st.first).input_bytes_per_token;
  }
  if (s + 1 < map.num_stages() && hw.device(map.stages[static_cast<size_t>(s + 1)].device).kind != DeviceKind::kCpu) {
    total += prefix.range(st.last, st.last).output_bytes_per_token;
  }
  return total;
}

MemoryEstimate estimate_memory(const ModelDesc& model, const HardwareSpec& hw, const StageMap& map,
                               const PlanOptions& options) {
  const LayerPrefix prefix(model);
  const int num_stages = map.num_stages();
  MemoryEstimate e;
  e.pinned_budget_bytes = hw.pinned_bytes;
  for (int s = 0; s < num_stages; ++s) {
    const StageSpec& st = map.stages[static_cast<size_t>(s)];
    const StageMemory m = estimate_stage(prefix.range(st.first, st.last), model.config, hw.device(st.device),
                                         activations_in_flight(options.schedule, num_stages, s, options.micro_batches),
                                         pinned_bytes_per_token(prefix, hw, map, s), options);
    e.pinned_need_bytes = checked_add(e.pinned_need_bytes, m.buffers, "pinned bytes");
    e.stages.push_back(m);
  }

  e.fits = e.pinned_need_bytes <= e.pinned_budget_bytes;
  for (const DeviceSpec& d : hw.devices) {
    DeviceMemory dm;
    dm.name = d.name;
    dm.memory_bytes = d.memory_bytes;
    dm.safety_margin = d.safety_margin;
    dm.budget_bytes = d.usable_bytes();
    dm.reserved_bytes = d.reserved_bytes;
    dm.need_bytes = d.reserved_bytes;
    bool used = false;
    for (int s = 0; s < num_stages; ++s) {
      if (map.stages[static_cast<size_t>(s)].device != d.name) continue;
      used = true;
      dm.need_bytes = checked_add(dm.need_bytes, e.stages[static_cast<size_t>(s)].total, "device need");
    }
    if (!used) dm.need_bytes = d.kind == DeviceKind::kCpu ? d.reserved_bytes : 0;
    dm.fits = dm.need_bytes <= dm.budget_bytes;
    e.fits = e.fits && dm.fits;
    e.devices.push_back(dm);
  }
  return e;
}

namespace {

std::string gib(int64_t bytes) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.2f", static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0));
  return buffer;
}

std::string pad(const std::string& text, size_t width, bool right = true) {
  if (text.size() >= width) return text;
  return right ? std::string(width - text.size(), ' ') + text : text + std::string(width - text.size(), ' ');
}

}  // namespace

std::string format_memory_table(const MemoryEstimate& e, const ModelConfig& model, const HardwareSpec& hw,
                                const StageMap& map) {
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
    devices.push_back(map.stages[s].device + (map.stages[s].cores > 0 ? " (" + std::to_string(map.stages[s].cores) + "c)" : ""));
    ranges.push_back(describe_range(model, map.stages[s].first, map.stages[s].last));
    in_flight.push_back(std::to_string(e.stages[s].in_flight));
  }
  row("", names);
  row("device", devices);
  row("layers", ranges);
  row("micro-batches held", in_flight);
  auto component = [&](const std::string& label, int64_t StageMemory::*field) {
    std::vector<std::string> cells;
    for (const StageMemory& m : e.stages) cells.push_back(gib(m.*field));
    row(label, cells);
  };
  component("weights", &StageMemory::weights);
  component("gradients", &StageMemory::grads);
  component("optimizer state", &StageMemory::optimizer);
  component("activations", &StageMemory::activations);
  component("pinned buffers", &StageMemory::buffers);
  component("allocator slack", &StageMemory::slack);
  out += std::string(kLabel + col * map.stages.size(), '-') + "\n";
  component("total", &StageMemory::total);

  out += "\nper device            need (GiB)   budget (GiB)                  verdict\n";
  for (const DeviceMemory& d : e.devices) {
    char line[256];
    std::snprintf(line, sizeof(line), "%-22s%10s   %8s = %s x %.2f %s  %s\n", d.name.c_str(), gib(d.need_bytes).c_str(),
                  gib(d.budget_bytes).c_str(), gib(d.memory_bytes).c_str(), d.safety_margin,
                  d.reserved_bytes > 0 ? ("(" + gib(d.reserved_bytes) + " reserved in need)").c_str() : "",
                  d.fits ? "fits" : ("DOES NOT FIT (" + gib(d.need_bytes - d.budget_bytes) + " over)").c_str());
    out += line;
  }
  char line[160];
  const bool pinned_fits = e.pinned_need_bytes <= e.pinned_budget_bytes;
  std::snprintf(line, sizeof(line), "%-22s%10s   %8s                      %s\n", "pinned (host)",
                gib(e.pinned_need_bytes).c_str(), gib(e.pinned_budget_bytes).c_str(),
                pinned_fits ? "fits" : "DOES NOT FIT");
  out += line;
  (void)hw;
  return out;
}

}  // namespace pipetrain
