#include "runtime/io/plan_report.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>

#include "memory/param_count.h"
#include "memory/units.h"
#include "scheduler/cost_model.h"

namespace pipetrain {

namespace {

// The plan's options; a plan that streams also its window.
std::string options_line(const Plan& p) {
  const PlanOptions& o = p.options;
  char line[256];
  std::snprintf(line, sizeof(line), "%s, %d micro-batches of %lld, checkpointing %s, %s", o.schedule.name().c_str(),
                o.micro_batches, static_cast<long long>(o.micro_batch_size), o.checkpointing ? "on" : "off",
                o.optimizer.kind.name().c_str());
  const bool streams = std::any_of(p.map.stages.begin(), p.map.stages.end(),
                                   [](const StageSpec& st) { return st.placement().streamed(); });
  return std::string(line) + (streams ? ", window of " + std::to_string(o.window_layers) + " layer" +
                                            (o.window_layers == 1 ? "" : "s")
                                      : "");
}

std::string prediction_line(const Plan& p) {
  char line[256];
  std::snprintf(line, sizeof(line), "%.0f tokens/s, step %.3f s, bubble %.1f%%, bottleneck %s (%.0f%% busy)",
                p.predicted.tokens_per_s, p.predicted.step_seconds, 100.0 * p.predicted.bubble_fraction,
                p.predicted.bottleneck.c_str(),
                p.predicted.utilisation.count(p.predicted.bottleneck) ? 100.0 * p.predicted.utilisation.at(p.predicted.bottleneck) : 0.0);
  return line;
}

std::string map_line(const ModelConfig& model, const StageMap& map) {
  std::string text;
  for (const StageSpec& st : map.stages) {
    text += (text.empty() ? "" : " | ") + st.device.name() + (st.cores > 0 ? "(" + std::to_string(st.cores) + "c)" : "") +
            (st.lanes > 1 ? "(" + std::to_string(st.lanes) + " lanes)" : "") + (st.host > 0 ? "@host" + std::to_string(st.host) : "") +
            " " + describe_range(model, st.first, st.last);
  }
  return text;
}

}  // namespace

std::string time_source(const ModelConfig& model, const HardwareSpec& hardware, const PlanOptions& options) {
  if (StageTimer(model, hardware, options).uses_measured_times()) {
    return "measured per-layer times (" + hardware.source + ")";
  }
  std::string text = "FLOPs over the sustained rates of hardware '" + hardware.name + "'";
  if (!hardware.measured.entries.empty()) {
    text += " (its measured times are for " + hardware.measured.model_key + ", not " +
            profile_key(model, options.micro_batch_size) + ": run `pipetrain profile` for this model)";
  }
  return text;
}

std::string network_note(const HardwareSpec& hardware, const Plan& plan) {
  if (plan.map.num_hosts() == 1 && plan.options.replicas == 1) return "";
  if (!hardware.network.described()) {
    return "; hardware '" + hardware.name + "' describes no network, so copies between hosts and the replicas' gradient "
           "sums cost nothing here (add network: {bandwidth_gb_per_s, latency_us} to it)";
  }
  char text[160];
  std::snprintf(text, sizeof(text), "; network %.3g GB/s, %.0f us each way (hardware '%s')", hardware.network.bytes_per_s / 1e9,
                hardware.network.latency_s * 1e6, hardware.name.c_str());
  return text;
}

std::string format_plan_text(const PlanRequest& request, const PlanOutcome& outcome, const std::vector<Remedy>& remedies) {
  const ModelConfig& m = request.model;
  std::string out;
  char line[512];
  std::snprintf(line, sizeof(line), "model: %lld parameters (%lld blocks, hidden %lld, %s); hardware: %s (%s)\n",
                static_cast<long long>(total_param_count(m)), static_cast<long long>(m.num_layers),
                static_cast<long long>(m.hidden_dim), dtype_name(m.dtype).c_str(), request.hardware.name.c_str(),
                request.hardware.source.c_str());
  out += line;
  const Plan& plan = outcome.plans.front();
  if (outcome.fits) {
    out += std::string(request.map ? "plan (given stage map): " : "best plan: ") + map_line(m, plan.map) + "\n";
  } else {
    out += std::string(request.map ? "plan (given stage map): " : "closest plan (nothing fits): ") + map_line(m, plan.map) + "\n";
  }
  out += "options: " + options_line(plan) + "\n\n";
  out += format_memory_table(plan.memory, m, plan.map);
  out += "\npredicted: " + prediction_line(plan) + "\n";
  out += "times: " + time_source(m, request.hardware, request.options) + network_note(request.hardware, plan) + "\n";
  if (plan.map.num_hosts() > 1 || plan.options.replicas > 1) {
    std::snprintf(line, sizeof(line), "processes: %d host(s) x %d replica(s) = %d (rank = replica x hosts + host)\n",
                  plan.map.num_hosts(), plan.options.replicas, plan.map.num_hosts() * plan.options.replicas);
    out += line;
  }
  if (outcome.fits && outcome.plans.size() > 1) {
    out += "\nrunners-up:\n";
    for (size_t i = 1; i < outcome.plans.size(); ++i) {
      const Plan& p = outcome.plans[i];
      out += "  " + std::to_string(i) + ". " + map_line(m, p.map) + "; " + options_line(p) + "\n     " +
             prediction_line(p) + "\n";
    }
  }
  if (!request.map) {
    std::snprintf(line, sizeof(line), "\n(searched %lld candidates, simulated %lld)\n", static_cast<long long>(outcome.candidates),
                  static_cast<long long>(outcome.simulated));
    out += line;
  }
  if (!outcome.fits) {
    out += "\nDOES NOT FIT:";
    for (const DeviceMemory& d : plan.memory.devices) {
      if (d.fits) continue;
      out += " " + d.name() + " needs " + format_gib(d.need_bytes) + ", budget is " + format_gib(d.budget_bytes) + ";";
    }
    if (plan.memory.pinned_need_bytes > plan.memory.pinned_budget_bytes) {
      out += " pinned memory needs " + format_gib(plan.memory.pinned_need_bytes) + ", budget is " +
             format_gib(plan.memory.pinned_budget_bytes) + ";";
    }
    out += "\n\nremedies (each planned with the same estimator):\n";
    for (const Remedy& r : remedies) out += "  - " + r.description + "\n";
  }
  return out;
}

namespace {

nlohmann::ordered_json stage_json(const ModelConfig& model, const Plan& p, size_t s) {
  const StageSpec& st = p.map.stages[s];
  const StageMemory& mem = p.memory.stages[s];
  const StageTiming& t = p.stage_times[s];
  const Placement place = st.placement();
  return {{"device", st.device.name()},
          {"cores", st.cores},
          {"lanes", st.lanes},
          {"host", st.host},
          {"weights", place.weights.name()},
          {"optimizer_state", place.optimizer.name()},
          {"layers", {{"first", st.first}, {"last", st.last}, {"first_name", layer_name(model, st.first)},
                      {"last_name", layer_name(model, st.last)}}},
          {"micro_batches_held", mem.in_flight},
          {"ops", format_ops(p.schedule.stages[s])},
          {"bytes", {{"weights", mem.weights}, {"grads", mem.grads}, {"grads_in_ram", mem.host_grads}, {"master", mem.master},
                     {"optimizer", mem.optimizer},
                     {"activations", mem.activations}, {"buffers", mem.buffers}, {"slack", mem.slack}, {"total", mem.total}}},
          {"predicted", {{"resource", t.resource}, {"forward_seconds", t.forward_seconds},
                         {"backward_seconds", t.backward_seconds}, {"optimizer_seconds", t.optimizer_seconds}}}};
}

nlohmann::ordered_json boundary_json(const BoundaryPlan& b) {
  nlohmann::ordered_json j = {{"from", b.from.name()}, {"to", b.to.name()}, {"activation_bytes", b.activation_bytes}};
  if (b.rings.staged) {
    j["pinned_rings"] = {{"host_stage", b.rings.host_stage}, {"slot_bytes", b.rings.slot_bytes},
                         {"forward_slots", b.rings.forward_slots}, {"backward_slots", b.rings.backward_slots}};
  }
  if (!b.predicted.forward_resource.empty()) {
    j["forward_copy"] = {{"resource", b.predicted.forward_resource}, {"seconds", b.predicted.forward_seconds}};
  }
  if (!b.predicted.backward_resource.empty()) {
    j["backward_copy"] = {{"resource", b.predicted.backward_resource}, {"seconds", b.predicted.backward_seconds}};
  }
  return j;
}

nlohmann::ordered_json plan_json(const ModelConfig& model, const Plan& p) {
  nlohmann::ordered_json j;
  j["schedule"] = p.options.schedule.name();
  j["micro_batches"] = p.options.micro_batches;
  j["micro_batch_size"] = p.options.micro_batch_size;
  j["checkpointing"] = p.options.checkpointing;
  j["window_layers"] = p.options.window_layers;        // streamed stages' GPU window
  j["layerwise_update"] = p.options.layerwise_update;
  j["optimizer"] = p.options.optimizer.kind.name();
  j["replicas"] = p.options.replicas;
  j["hosts"] = p.map.num_hosts();
  j["stages"] = nlohmann::ordered_json::array();
  for (size_t s = 0; s < p.map.stages.size(); ++s) j["stages"].push_back(stage_json(model, p, s));
  j["boundaries"] = nlohmann::ordered_json::array();
  for (const BoundaryPlan& b : p.boundaries) j["boundaries"].push_back(boundary_json(b));
  j["devices"] = nlohmann::ordered_json::array();
  for (const DeviceMemory& d : p.memory.devices) {
    j["devices"].push_back({{"name", d.name()}, {"memory_bytes", d.memory_bytes}, {"safety_margin", d.safety_margin},
                            {"budget_bytes", d.budget_bytes}, {"need_bytes", d.need_bytes}, {"fits", d.fits}});
  }
  j["pinned"] = {{"need_bytes", p.memory.pinned_need_bytes}, {"budget_bytes", p.memory.pinned_budget_bytes}};
  nlohmann::ordered_json utilisation;
  for (const auto& [resource, u] : p.predicted.utilisation) utilisation[resource] = u;
  j["predicted"] = {{"step_seconds", p.predicted.step_seconds},
                    {"tokens_per_second", p.predicted.tokens_per_s},
                    {"bubble_fraction", p.predicted.bubble_fraction},
                    {"bottleneck", p.predicted.bottleneck},
                    {"utilisation", utilisation}};
  return j;
}

}  // namespace

nlohmann::ordered_json plan_to_json(const PlanRequest& request, const PlanOutcome& outcome, const std::vector<Remedy>& remedies) {
  nlohmann::ordered_json out;
  out["fits"] = outcome.fits;
  out["model"] = {{"params", total_param_count(request.model)}, {"num_layers", request.model.num_layers},
                  {"hidden_dim", request.model.hidden_dim}, {"dtype", dtype_name(request.model.dtype)}};
  out["hardware"] = {{"name", request.hardware.name}, {"source", request.hardware.source}};
  const nlohmann::ordered_json best = plan_json(request.model, outcome.plans.front());
  for (const auto& [key, value] : best.items()) out[key] = value;
  out["runners_up"] = nlohmann::ordered_json::array();
  for (size_t i = 1; i < outcome.plans.size(); ++i) out["runners_up"].push_back(plan_json(request.model, outcome.plans[i]));
  out["search"] = {{"auto", !request.map.has_value()}, {"candidates", outcome.candidates}, {"simulated", outcome.simulated}};
  out["remedies"] = nlohmann::ordered_json::array();
  for (const Remedy& r : remedies) {
    nlohmann::ordered_json needs = nlohmann::ordered_json::array();
    for (const DeviceMemory& d : r.outcome.plans.front().memory.devices) {
      needs.push_back({{"name", d.name()}, {"need_bytes", d.need_bytes}, {"budget_bytes", d.budget_bytes}});
    }
    out["remedies"].push_back({{"change", r.change}, {"fits", r.fits}, {"description", r.description}, {"devices", needs}});
  }
  return out;
}

}  // namespace pipetrain
