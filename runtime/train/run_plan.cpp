#include "runtime/train/run_plan.h"

namespace pipetrain {

PlanRequest plan_request_for(const RunConfig& run, const HardwareSpec& hardware) {
  PlanRequest request;
  request.model = run.model;
  request.hardware = hardware;
  request.options.micro_batch_size = run.train.micro_batch_size;
  request.options.micro_batches = static_cast<int>(run.train.micro_batches);
  request.options.schedule = run.train.schedule;
  request.options.checkpointing = run.train.checkpointing;
  request.options.layerwise_update = run.train.layerwise_update;
  request.options.window_layers = static_cast<int>(run.train.window_layers);
  request.options.replicas = static_cast<int>(run.train.replicas);
  request.options.optimizer = run.train.optimizer;
  request.options.precision = run.precision;
  return request;
}

Plan plan_of_run(const RunConfig& run, const HardwareSpec& hardware) {
  PlanRequest request = plan_request_for(run, hardware);
  request.map = run.stages.stages.empty() ? single_cpu_stage(run.model) : run.stages;
  return run_plan(request).plans.front();
}

RunConfig recorded_config(const RunConfig& run, const Plan& plan) {
  RunConfig recorded = run;
  recorded.stages = plan.map;
  recorded.train.schedule = plan.options.schedule;
  recorded.train.micro_batches = plan.options.micro_batches;
  recorded.train.micro_batch_size = plan.options.micro_batch_size;
  recorded.train.checkpointing = plan.options.checkpointing;
  recorded.train.layerwise_update = plan.options.layerwise_update;
  recorded.train.window_layers = plan.options.window_layers;
  recorded.train.optimizer = plan.options.optimizer;
  return recorded;
}

}  // namespace pipetrain
