#include "scheduler/remedies.h"

#include <algorithm>
#include <cstdio>
#include <functional>
#include <limits>

#include "memory/layer_prefix.h"

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

// The most lenient options the request allows: 1F1B, the fewest micro-batches, checkpointing.
PlanOptions lenient_options(const PlanRequest& r) {
  PlanOptions o = r.options;
  const auto& c = r.choices;
  if (c.schedules.empty() || std::count(c.schedules.begin(), c.schedules.end(), ScheduleKind::kOneFOneB) > 0) {
    o.schedule = ScheduleKind::kOneFOneB;
  } else {
    o.schedule = c.schedules.front();
  }
  o.micro_batches = c.micro_batch_counts.empty() ? 1 : *std::min_element(c.micro_batch_counts.begin(), c.micro_batch_counts.end());
  o.checkpointing = c.checkpointing.empty() || std::count(c.checkpointing.begin(), c.checkpointing.end(), true) > 0;
  return o;
}

// The split (over the allowed shapes, lenient options) whose worst need/budget ratio is smallest.
Plan closest_plan(const PlanRequest& r) {
  const ModelDesc model = describe_model(r.model);
  const PlanOptions o = lenient_options(r);
  const int64_t n = r.model.num_model_layers();
  std::optional<StageMap> best_map;
  double best_ratio = std::numeric_limits<double>::infinity();
  for (const auto& shape : r.choices.shapes.empty() ? default_shapes(r.hardware) : r.choices.shapes) {
    const int s = static_cast<int>(shape.size());
    if (s > n) continue;
    std::vector<int64_t> last(static_cast<size_t>(s));
    std::function<void(int, int64_t)> cut = [&](int i, int64_t first) {
      if (i == s - 1) {
        last[static_cast<size_t>(i)] = n - 1;
        const StageMap map = make_stage_map(shape, last);
        const double ratio = worst_ratio(estimate_memory(model, r.hardware, map, o));
        if (ratio < best_ratio) {
          best_ratio = ratio;
          best_map = map;
        }
        return;
      }
      // Past ~1000 layers per boundary, try every 8th cut: this only shapes an error message.
      const int64_t step = n > 1000 ? 8 : 1;
      for (int64_t end = first; end <= n - (s - i); end += step) {
        last[static_cast<size_t>(i)] = end;
        cut(i + 1, end + 1);
      }
    };
    cut(0, 0);
  }
  return evaluate_plan(model, r.hardware, *best_map, o);
}

std::string gib(int64_t bytes) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.2f", static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0));
  return buffer;
}

std::string needs_line(const MemoryEstimate& e) {
  std::string text;
  for (const DeviceMemory& d : e.devices) {
    if (d.need_bytes == 0) continue;
    text += (text.empty() ? "" : ", ") + d.name + " " + gib(d.need_bytes) + " of " + gib(d.budget_bytes) + " GiB";
  }
  if (e.pinned_need_bytes > 0) text += ", pinned " + gib(e.pinned_need_bytes) + " of " + gib(e.pinned_budget_bytes) + " GiB";
  return text;
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
    remedy.description = change + ": " + (saved >= 0 ? "saves " + gib(saved) : "adds " + gib(-saved)) + " GiB; needs " +
                         needs_line(e) + (remedy.fits ? "; fits" : "; still does not fit");
    remedies.push_back(remedy);
    return remedy.fits;
  };
  const bool fixed = request.map.has_value();

  if (request.options.optimizer.kind == OptimizerKind::kAdamW) {
    attempt("SGD with momentum instead of AdamW", [](PlanRequest& r) {
      r.options.optimizer.kind = OptimizerKind::kSgd;
      r.options.optimizer.momentum = 0.9;
    });
    attempt("SGD without momentum instead of AdamW", [](PlanRequest& r) {
      r.options.optimizer.kind = OptimizerKind::kSgd;
      r.options.optimizer.momentum = 0.0;
    });
  } else if (request.options.optimizer.momentum != 0.0) {
    attempt("SGD without momentum", [](PlanRequest& r) { r.options.optimizer.momentum = 0.0; });
  }
  const bool checkpointing_off = fixed ? !request.options.checkpointing
                                       : (request.choices.checkpointing.size() == 1 && !request.choices.checkpointing[0]);
  if (checkpointing_off) {
    attempt("activation checkpointing", [&](PlanRequest& r) {
      r.options.checkpointing = true;
      if (!fixed) r.choices.checkpointing = {true};
    });
  }
  const bool gpipe_only = fixed ? request.options.schedule == ScheduleKind::kGPipe
                                : (request.choices.schedules.size() == 1 && request.choices.schedules[0] == ScheduleKind::kGPipe);
  if (gpipe_only) {
    attempt("1F1B instead of GPipe", [&](PlanRequest& r) {
      r.options.schedule = ScheduleKind::kOneFOneB;
      if (!fixed) r.choices.schedules = {ScheduleKind::kOneFOneB};
    });
  }
  if (request.model.dtype == Dtype::kFloat32) {
    attempt("bfloat16 weights and gradients (optimizer state stays FP32)",
            [](PlanRequest& r) { r.model.dtype = Dtype::kBFloat16; });
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
    attempt("num_layers <= " + std::to_string(lo) + " (" + optimizer_name(request.options.optimizer.kind) +
                ", split chosen by the planner)",
            [&](PlanRequest& r) { r = with_layers(lo); });
  }
  return remedies;
}

}  // namespace pipetrain
