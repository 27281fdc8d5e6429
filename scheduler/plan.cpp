#include "scheduler/plan.h"

#include "memory/layer_prefix.h"
#include "scheduler/cost_model.h"

namespace pipetrain {

int64_t tokens_per_step(const ModelConfig& model, const PlanOptions& options) {
  return checked_mul(checked_mul(options.micro_batch_size, model.seq_len, "tokens per micro-batch"),
                     options.micro_batches, "tokens per step");
}

Plan evaluate_plan(const ModelDesc& model, const HardwareSpec& hw, const StageMap& map, const PlanOptions& options) {
  Plan plan{map,
            layer_placements(map),
            options,
            make_schedule(options.schedule, map.num_stages(), options.micro_batches),
            assign_cores(map, hw),
            {},
            {},
            stage_timings(model.config, hw, map, options),
            {}};
  plan.memory = estimate_memory(model, hw, map, plan.schedule.in_flight(), options);
  const LayerPrefix prefix(model);
  const std::vector<TransferTiming> transfers = transfer_timings(prefix, model.config, hw, map, options);
  for (int b = 0; b + 1 < map.num_stages(); ++b) {
    const StageSpec& sender = map.stages[static_cast<size_t>(b)];
    const int64_t bytes = checked_mul(options.micro_batch_size * model.config.seq_len,
                                      prefix.range(sender.last, sender.last).output_bytes_per_token, "boundary bytes");
    plan.boundaries.push_back({sender.device, map.stages[static_cast<size_t>(b + 1)].device, bytes,
                               plan.memory.rings[static_cast<size_t>(b)], transfers[static_cast<size_t>(b)]});
  }
  plan.predicted = simulate(plan.schedule, plan.stage_times, transfers, tokens_per_step(model.config, options));
  return plan;
}

}  // namespace pipetrain
