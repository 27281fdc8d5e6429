#include "scheduler/remedies.h"

#include <algorithm>
#include <functional>
#include <limits>

#include "memory/layer_prefix.h"
#include "memory/units.h"
#include "scheduler/splits.h"

namespace pipetrain {

int64_t total_need_bytes(const MemoryEstimate& e) {
  int64_t total = 0;
  for (const DeviceMemory& d : e.devices) total += d.need_bytes;
  return total;
}

double worst_ratio(const MemoryEstimate& e) {
  double worst = e.pinned_budget_bytes > 0
                     ? static_cast<double>(e.pinned_need_bytes) / static_cast<double>(e.pinned_budget_bytes)
                     : (e.pinned_need_bytes > 0 ? std::numeric_limits<double>::infinity() : 0.0);
  for (const DeviceMemory& d : e.devices) {
    worst = std::max(worst, static_cast<double>(d.need_bytes) / static_cast<double>(d.budget_bytes));
  }
  return worst;
}

namespace {

// Σ over a schedule's stages of the micro-batches each holds: less means fewer activations kept.
int held_micro_batches(ScheduleKind kind, int num_stages, int micro_batches) {
  int held = 0;
  for (int n : make_schedule(kind, num_stages, micro_batches).in_flight()) held += n;
  return held;
}

// The schedule (of `allowed`, or every registered one) that holds the fewest micro-batches; on a
// tie, `preferred` when it is allowed.
ScheduleKind leanest_schedule(const std::vector<ScheduleKind>& allowed, ScheduleKind preferred, int num_stages,
                              int micro_batches) {
  const std::vector<ScheduleKind> kinds = allowed.empty() ? ScheduleKind::all() : allowed;
  ScheduleKind best = std::count(kinds.begin(), kinds.end(), preferred) > 0 ? preferred : kinds.front();
  for (ScheduleKind k : kinds) {
    if (held_micro_batches(k, num_stages, micro_batches) < held_micro_batches(best, num_stages, micro_batches)) best = k;
  }
  return best;
}

// The most lenient options the request allows: the schedule that holds the fewest micro-batches,
// the fewest micro-batches, checkpointing.
PlanOptions lenient_options(const PlanRequest& r, int num_stages) {
  PlanOptions o = r.options;
  const auto& c = r.choices;
  o.micro_batches = c.micro_batch_counts.empty() ? 1 : *std::min_element(c.micro_batch_counts.begin(), c.micro_batch_counts.end());
  o.schedule = leanest_schedule(c.schedules, r.options.schedule, num_stages, o.micro_batches);
  o.checkpointing = c.checkpointing.empty() || std::count(c.checkpointing.begin(), c.checkpointing.end(), true) > 0;
  return o;
}

// The split (over the allowed shapes, lenient options) whose worst need/budget ratio is smallest.
Plan closest_plan(const PlanRequest& r) {
  const ModelDesc model = describe_model(r.model);
  const int64_t n = r.model.num_model_layers();
  std::optional<StageMap> best_map;
  std::optional<PlanOptions> best_options;
  double best_ratio = std::numeric_limits<double>::infinity();
  for (const Shape& shape : r.choices.shapes.empty() ? default_shapes(r.hardware) : r.choices.shapes) {
    const int s = static_cast<int>(shape.size());
    const PlanOptions o = lenient_options(r, s);
    const std::vector<int> in_flight = make_schedule(o.schedule, s, o.micro_batches).in_flight();
    // Past ~1000 layers per boundary, try every 8th cut: this only shapes an error message.
    for_each_cut(n, s, n > 1000 ? 8 : 1, [&](const std::vector<int64_t>& last) {
      const StageMap map = make_stage_map(shape, last);
      const double ratio = worst_ratio(estimate_memory(model, r.hardware, map, in_flight, o));
      if (ratio < best_ratio) {
        best_ratio = ratio;
        best_map = map;
        best_options = o;
      }
    });
  }
  return evaluate_plan(model, r.hardware, *best_map, *best_options);
}

std::string needs_line(const MemoryEstimate& e) {
  std::string text;
  for (const DeviceMemory& d : e.devices) {
    if (d.need_bytes == 0) continue;
    text += (text.empty() ? "" : ", ") + d.name() + " " + gib_digits(d.need_bytes) + " of " + gib_digits(d.budget_bytes) + " GiB";
  }
  if (e.pinned_need_bytes > 0) {
    text += ", pinned " + gib_digits(e.pinned_need_bytes) + " of " + gib_digits(e.pinned_budget_bytes) + " GiB";
  }
  return text;
}

// Each device kind in the 16-bit dtype the hardware rates faster (bfloat16 on a tie: it needs no
// loss scale), with dynamic loss scaling when that is float16. float16 only where the hardware
// gives it a rate of its own: an unrated dtype is costed at float32's rate, which would beat a rated
// bfloat16 on every CPU preset (and LibTorch's CPU float16 kernels are slow).
Precision sixteen_bit_precision(const HardwareSpec& hw, Precision p) {
  auto faster = [](const DeviceSpec* d) {
    if (d == nullptr || d->flops_per_s_by_dtype.count(Dtype::kFloat16) == 0) return Dtype::kBFloat16;
    return d->flops_per_s_for(Dtype::kFloat16, d->cores) > d->flops_per_s_for(Dtype::kBFloat16, d->cores) ? Dtype::kFloat16
                                                                                                          : Dtype::kBFloat16;
  };
  if (!is_16_bit(p.cpu)) p.cpu = faster(&hw.cpu());
  if (!is_16_bit(p.cuda)) p.cuda = faster(hw.first_gpu());
  if (p.uses(Dtype::kFloat16)) p.loss_scaling = LossScaling::kDynamic;
  return p;
}

}  // namespace

PlanOutcome run_plan(const PlanRequest& r) {
  PlanOutcome out;
  const ModelDesc model = describe_model(r.model);
  if (r.map) {
    validate_stage_map(*r.map, r.model, r.hardware);
    out.plans.push_back(evaluate_plan(model, r.hardware, *r.map, r.options));
    out.fits = out.plans.front().memory.fits;
    out.simulated = out.candidates = 1;
    return out;
  }
  PlannerResult result = plan_auto(model, r.hardware, r.options, r.choices);
  out.candidates = result.candidates;
  out.simulated = result.simulated;
  if (!result.plans.empty()) {
    out.fits = true;
    out.plans = std::move(result.plans);
  } else {
    out.plans.push_back(closest_plan(r));
  }
  return out;
}

std::vector<Remedy> suggest_remedies(const PlanRequest& request, const PlanOutcome& failed) {
  const int64_t failed_need = total_need_bytes(failed.plans.front().memory);
  std::vector<Remedy> remedies;
  auto attempt = [&](const std::string& change, const std::function<void(PlanRequest&)>& apply) {
    Remedy remedy{change, "", false, request, {}};
    apply(remedy.request);
    remedy.outcome = run_plan(remedy.request);
    remedy.fits = remedy.outcome.fits;
    const MemoryEstimate& e = remedy.outcome.plans.front().memory;
    const int64_t saved = failed_need - total_need_bytes(e);
    remedy.description = change + ": " + (saved >= 0 ? "saves " + gib_digits(saved) : "adds " + gib_digits(-saved)) + " GiB; needs " +
                         needs_line(e) + (remedy.fits ? "; fits" : "; still does not fit");
    remedies.push_back(remedy);
    return remedy.fits;
  };
  const bool fixed = request.map.has_value();

  // Every registered optimizer setting that keeps less state per parameter than the current one.
  const OptimizerConfig& current = request.options.optimizer;
  for (const OptimizerConfig& lighter : optimizer_settings(current)) {
    if (optimizer_state_bytes_per_param(lighter) >= optimizer_state_bytes_per_param(current)) continue;
    attempt(optimizer_label(lighter) + " instead of " + optimizer_label(current),
            [&lighter](PlanRequest& r) { r.options.optimizer = lighter; });
  }
  const size_t keeping_optimizer = remedies.size();  // the remedies from here on keep the optimizer
  const bool checkpointing_off = fixed ? !request.options.checkpointing
                                       : (request.choices.checkpointing.size() == 1 && !request.choices.checkpointing[0]);
  if (checkpointing_off) {
    attempt("activation checkpointing", [&](PlanRequest& r) {
      r.options.checkpointing = true;
      if (!fixed) r.choices.checkpointing = {true};
    });
  }
  // A fixed schedule that holds more micro-batches than another registered one could.
  const bool schedule_fixed = fixed || request.choices.schedules.size() == 1;
  if (schedule_fixed) {
    const ScheduleKind current_schedule = fixed ? request.options.schedule : request.choices.schedules[0];
    const int stages = fixed ? request.map->num_stages() : failed.plans.front().map.num_stages();
    // The micro-batches the request would run with; for a search, the most it may use.
    const auto& counts = request.choices.micro_batch_counts;
    const int m = fixed ? request.options.micro_batches : (counts.empty() ? 32 : *std::max_element(counts.begin(), counts.end()));
    const ScheduleKind leaner = leanest_schedule({}, current_schedule, stages, m);
    if (held_micro_batches(leaner, stages, m) < held_micro_batches(current_schedule, stages, m)) {
      attempt(leaner.label() + " instead of " + current_schedule.label(), [&](PlanRequest& r) {
        r.options.schedule = leaner;
        if (!fixed) r.choices.schedules = {leaner};
      });
    }
  }
  // 16-bit compute: each device in its faster 16-bit dtype, float32 masters where the optimizer lives.
  const Precision& precision = request.options.precision;
  if (!is_16_bit(precision.cpu) || !is_16_bit(precision.cuda)) {
    const Precision sixteen = sixteen_bit_precision(request.hardware, precision);
    attempt("16-bit compute (cpu " + dtype_name(sixteen.cpu) + ", cuda " + dtype_name(sixteen.cuda) +
                ", float32 master weights where the optimizer lives)",
            [&sixteen](PlanRequest& r) { r.options.precision = sixteen; });
  }
  // A fixed map's GPU stages with their optimizer in RAM (the search tries that by itself).
  if (fixed) {
    const auto on_gpu_with_optimizer = [](const StageSpec& st) {
      return st.device.has_own_memory() && st.placement().optimizer == st.device;
    };
    if (std::any_of(request.map->stages.begin(), request.map->stages.end(), on_gpu_with_optimizer)) {
      attempt("the GPU stages' optimizer in CPU RAM (optimizer: cpu)", [&](PlanRequest& r) {
        for (StageSpec& st : r.map->stages) {
          if (on_gpu_with_optimizer(st)) st.optimizer = DeviceId::cpu();
        }
      });
    }
  }
  // Streamed stages stepping each layer as its gradient arrives keep no full set of gradients in
  // RAM: where a plan may stream (a search on hardware with a GPU, or a map that streams).
  const bool may_stream =
      fixed ? std::any_of(request.map->stages.begin(), request.map->stages.end(),
                          [](const StageSpec& st) { return st.placement().streamed(); })
            : request.hardware.first_gpu() != nullptr &&
                  (request.choices.weights_streamed.empty() ||
                   std::count(request.choices.weights_streamed.begin(), request.choices.weights_streamed.end(), true) > 0);
  if (may_stream && !request.options.layerwise_update) {
    attempt("streamed layers update as their gradients arrive (train.layerwise_update: true; clipping per layer)",
            [](PlanRequest& r) { r.options.layerwise_update = true; });
  }
  // When no single change that keeps the model and its optimizer fits, those changes together.
  const bool any_fits = std::any_of(remedies.begin() + static_cast<std::ptrdiff_t>(keeping_optimizer), remedies.end(),
                                    [](const Remedy& r) { return r.fits; });
  const Precision sixteen = sixteen_bit_precision(request.hardware, precision);
  if (!any_fits && (!is_16_bit(precision.cpu) || !is_16_bit(precision.cuda) ||
                    current.state_dtype != Dtype::kBFloat16 || (may_stream && !request.options.layerwise_update))) {
    std::string change = "together: 16-bit compute";
    if (current.state_dtype != Dtype::kBFloat16 && optimizer_state_bytes_per_param(current) > 0) change += ", bfloat16 moments";
    if (may_stream) change += ", layerwise update";
    attempt(change, [&](PlanRequest& r) {
      r.options.precision = sixteen;
      if (optimizer_state_bytes_per_param(current) > 0) r.options.optimizer.state_dtype = Dtype::kBFloat16;
      r.options.layerwise_update = r.options.layerwise_update || may_stream;
    });
  }
  for (int64_t mb = request.options.micro_batch_size / 2; mb >= 1; mb /= 2) {
    const bool fits = attempt("micro_batch_size " + std::to_string(mb) + " instead of " +
                                  std::to_string(request.options.micro_batch_size),
                              [mb](PlanRequest& r) { r.options.micro_batch_size = mb; });
    if (fits || mb == 1) break;
    remedies.pop_back();  // only the first halving that fits (or the last tried) is worth a line
  }
  if (fixed) {
    attempt("let the planner choose the split (--auto)", [](PlanRequest& r) { r.map.reset(); });
  }
  // The deepest model that fits with everything else unchanged (planned automatically).
  auto with_layers = [&](int64_t layers) {
    PlanRequest r = request;
    r.model.num_layers = layers;
    r.map.reset();
    return r;
  };
  if (!run_plan(with_layers(1)).fits) {
    attempt("num_layers 1", [&](PlanRequest& r) { r = with_layers(1); });
  } else {
    int64_t lo = 1, hi = request.model.num_layers - 1;  // lo fits
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo + 1) / 2;
      if (run_plan(with_layers(mid)).fits) lo = mid;
      else hi = mid - 1;
    }
    attempt("num_layers <= " + std::to_string(lo) + " (" + request.options.optimizer.kind.name() +
                ", split chosen by the planner)",
            [&](PlanRequest& r) { r = with_layers(lo); });
  }
  return remedies;
}

}  // namespace pipetrain
