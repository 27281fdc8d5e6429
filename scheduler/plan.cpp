#include "scheduler/plan.h"

#include <algorithm>
#include <cmath>

#include "memory/errors.h"
#include "scheduler/cost_model.h"

namespace pipetrain {

int64_t tokens_per_step(const ModelConfig& model, const PlanOptions& options) {
  return checked_mul(checked_mul(checked_mul(options.micro_batch_size, model.seq_len, "tokens per micro-batch"),
                                 options.micro_batches, "tokens per step"),
                     options.replicas, "tokens per step over the replicas");
}

double peak_memory_share(const Plan& plan) {
  auto share = [](int64_t need, int64_t budget) {
    return budget > 0 ? static_cast<double>(need) / static_cast<double>(budget) : (need > 0 ? 1e300 : 0.0);
  };
  double peak = share(plan.memory.pinned_need_bytes, plan.memory.pinned_budget_bytes);
  for (const DeviceMemory& d : plan.memory.devices) peak = std::max(peak, share(d.need_bytes, d.budget_bytes));
  return peak;
}

bool better_plan(const Plan& a, const Plan& b) {
  const double ta = a.predicted.step_seconds / a.options.micro_batches;
  const double tb = b.predicted.step_seconds / b.options.micro_batches;
  if (std::abs(ta - tb) > 1e-12 * std::max(ta, tb)) return ta < tb;
  const double ma = peak_memory_share(a), mb = peak_memory_share(b);
  if (ma != mb) return ma < mb;
  return a.map.num_stages() < b.map.num_stages();
}

Plan evaluate_plan(const ModelDesc& model, const HardwareSpec& hw, const StageMap& map, const PlanOptions& options) {
  // A streamed stage visits each layer once for all micro-batches: only the layer-major schedule
  // runs it so.
  for (int s = 0; s < map.num_stages(); ++s) {
    if (!map.stages[static_cast<size_t>(s)].placement().streamed()) continue;
    if (options.schedule != ScheduleKind::named("layer-major")) {
      throw InputError("stage " + std::to_string(s) + " streams its weights from RAM, which runs layer-major; the schedule is " +
                       options.schedule.name() + " (set train.schedule: layer-major, or drop `weights: cpu`)");
    }
    // Its layers' weights are gone from the window after forward: backward recomputes each layer.
    if (!options.checkpointing) {
      throw InputError("stage " + std::to_string(s) + " streams its weights from RAM and recomputes each layer in backward; "
                       "set train.checkpointing: true");
    }
  }
  Plan plan{map,
            layer_placements(map),
            options,
            make_schedule(options.schedule, map.num_stages(), options.micro_batches, max_lanes(map)),
            assign_cores(map, hw),
            {},
            {},
            stage_timings(model.config, hw, map, options),
            {}};
  plan.memory = estimate_memory(model, hw, map, plan.schedule.in_flight(), options);
  PrefixByDtype prefixes(model.config);
  const std::vector<int64_t> per_token = boundary_bytes_per_token(prefixes, map, options.precision);
  const std::vector<TransferTiming> transfers = transfer_timings(per_token, model.config, hw, map, options);
  std::vector<double> boundary_bytes;
  for (int b = 0; b + 1 < map.num_stages(); ++b) {
    const size_t i = static_cast<size_t>(b);
    const DeviceId from = map.stages[i].device, to = map.stages[i + 1].device;
    plan.boundaries.push_back({from, to,
                               boundary_dtype(options.precision.compute(from), options.precision.compute(to)),
                               checked_mul(options.micro_batch_size * model.config.seq_len, per_token[i], "boundary bytes"),
                               plan.memory.rings[i], transfers[i]});
    boundary_bytes.push_back(static_cast<double>(plan.boundaries.back().activation_bytes));
  }
  charge_staging_writes(hw, map, boundary_bytes, plan.stage_times);
  std::vector<bool> cpu_stage;
  for (const StageSpec& st : map.stages) cpu_stage.push_back(st.device.is_cpu());
  plan.predicted = simulate_with_neighbours(plan.schedule, plan.stage_times, transfers, tokens_per_step(model.config, options),
                                            cpu_stage, &plan.stage_times);
  return plan;
}

}  // namespace pipetrain
