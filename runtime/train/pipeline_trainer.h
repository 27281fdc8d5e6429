// The pipelined trainer: a plan (scheduler/plan.h) executed. The model is cut into the plan's stages,
// micro-batches flow through a oneTBB flow graph (scheduler/executor.h) in the order of the plan's
// op lists, every stage busy at once. The trainer builds nothing the plan decided: the schedule,
// the cores each stage computes on, the staging rings and the placement of every layer are the
// plan's; the run's config gives the model, the data, the learning rate and evaluation.
//
// A step is the reference trainer's step, executed differently: the same micro_batch_size *
// micro_batches windows, micro-batch m = rows [m * mbs, (m + 1) * mbs), each loss divided by M,
// gradients accumulated over the M micro-batches, then the global gradient norm
// sqrt(Σ per-stage squared norms), clipping, and every stage's optimizer stepping on its own device.
// Losses and parameters equal the reference trainer's up to floating-point reordering (tests check
// 1e-5 relative, for 1..4 stages, GPipe and 1F1B, with and without checkpointing).
//
// Cores are assigned per stage (scheduler/cores.h): a stage's ops run pinned to its group's cores,
// one op at a time per group, with the group's intra-op and OpenBLAS threads (train.intra_op_threads
// and train.blas_threads override them when non-zero). An exception in any stage cancels the step before any optimizer
// steps: the parameters stay as they were, and the error names the stage, the op and the micro-batch.
//
//   Plan plan = plan_of_run(run, hardware);            // runtime/train/run_plan.h
//   PipelineTrainer trainer(run, plan, hardware, /*keep_trace=*/true);
//   run_training(trainer, on_step);
//   PipelineSummary s = trainer.summary();   // measured bubble and step time against the simulator's
#pragma once

#include <chrono>
#include <deque>
#include <future>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "memory/hardware.h"
#include "scheduler/cores.h"
#include "scheduler/plan.h"
#include "scheduler/schedule.h"
#include "scheduler/timeline.h"
#include "runtime/backends/registry.h"
#include "runtime/dist/world.h"
#include "runtime/io/checkpoint.h"
#include "runtime/train/loss_scaler.h"
#include "runtime/train/replica_sums.h"
#include "runtime/train/trainer.h"
#include "stages/stage.h"
#include "stages/streamed_stage.h"

namespace pipetrain {

// A stage failed during a step; no optimizer stepped.
class PipelineError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct PipelineSummary {
  int steps_measured = 0;               // steps after the first (warm-up) one, or all when there is one
  double measured_bubble = 0.0;         // median over those steps
  double measured_pipeline_seconds = 0.0;  // median: first op start to last backward end
  double predicted_bubble = 0.0;        // the simulator, replaying the schedule with the median op times
  double predicted_pipeline_seconds = 0.0;
  double predicted_step_seconds = 0.0;  // with each stage's optimizer step after its last backward
  OpTimes op_times;
  // Per stage, the median over those steps of its ops' time over the pipeline span: a GPU stage's
  // busy fraction (its spans are timed on the GPU with CUDA events).
  std::vector<double> stage_busy;
};

// A GPU's caching allocator against the planner's estimate for that device.
struct VramLine {
  DeviceId device;
  DeviceMemoryReport report;
};

// Where this process stands among the run's processes (runtime/dist/world.h); the default is a run
// of one process.
struct ProcessGroups {
  int host = 0;               // this process computes the stages whose `host` this is
  Group* pipeline = nullptr;  // this replica's hosts, group rank = host (null with one host)
  Group* replicas = nullptr;  // this host's stages in every replica, group rank = replica (null with one)
  Group* saves = nullptr;     // replica 0's hosts, group rank = host: its checkpoints (null otherwise)
};

class PipelineTrainer : public Trainer, public LayerStates {
 public:
  // `plan` was made for run.model on `hardware`, with devices this build and machine have
  // (runtime/backends/registry.h place_stages). config() is `run` with the plan's decisions in it.
  //
  // With several processes (`groups`): this one builds only its host's stages and runs the whole
  // schedule, the other hosts' ops as no-ops, with NetworkTransfers where a boundary crosses hosts.
  // Losses, the gradient norm and validation are summed over the pipeline's hosts. Replicas
  // (run.train.replicas, the replicas group's size): each step reads the global batch
  // (replicas x micro_batches x micro_batch_size windows) and trains on its own share, rows
  // [replica * share, (replica + 1) * share); each stage's gradients are summed over the replicas
  // as its backward ends (ReplicaSums) and divided by their count, so the step equals one process
  // training the whole global batch.
  PipelineTrainer(const RunConfig& run, const Plan& plan, const HardwareSpec& hardware, bool keep_trace,
                  const ProcessGroups& groups = {});
  ~PipelineTrainer() override;

  StepRecord train_step() override;
  double validation_loss() override;
  int64_t steps_done() const override { return steps_done_; }
  const RunConfig& config() const override { return run_; }
  Corpus& corpus() override { return corpus_; }
  const Corpus& corpus() const { return corpus_; }

  // A checkpoint of the state after the last step under run_dir/checkpoints (runtime/io/checkpoint.h),
  // keeping the newest `keep`; returns its path. Waits for a background save first. With stages on
  // several hosts, host 0 writes it and the others send it their layers (they return "").
  std::string save_checkpoint(const std::string& run_dir, int64_t keep) const;
  // The same checkpoint, written on a thread of its own while training goes on
  // (train.background_checkpoints). It is exactly this step's state: the step, data position and
  // loss scale are taken now, and the weights and optimizer state change only in an optimizer
  // update, which waits for the save to finish first (before the step's forward when streamed
  // stages update layer by layer during the backward). It takes no copy of the state (the save
  // streams, runtime/io/checkpoint.h). A SIGKILL meanwhile leaves step-N.partial and the previous
  // checkpoint the newest.
  void save_checkpoint_in_background(const std::string& run_dir, int64_t keep) const;
  // Waits for a background save; its path, or "" when none was pending. Rethrows its error.
  std::string finish_saves() const;
  // Continues from a verified checkpoint of this model, written under any stage map.
  void resume_from(const CheckpointInfo& checkpoint);
  std::vector<std::pair<std::string, torch::Tensor>> layer_state(int64_t layer) const override;
  void set_layer_state(int64_t layer, const std::vector<std::pair<std::string, torch::Tensor>>& tensors) override;

  int num_stages() const { return static_cast<int>(stages_.size()); }
  // Stage s, resident (std::logic_error for a streamed one), or streamed (nullptr for a resident one).
  Stage& stage(int s);
  StreamedStage* streamed_stage(int s) { return streamed_[static_cast<size_t>(s)].get(); }
  const Plan& plan() const { return plan_; }
  const Schedule& schedule() const { return plan_.schedule; }
  const CoreAssignment& cores() const { return plan_.cores; }
  // Where each stage's ops run, as the simulator names it: "cpu", "cpu[1]", "cuda:0".
  std::vector<std::string> stage_resources() const;
  std::vector<int> stage_lanes() const;  // per stage, its lanes (memory/stage_map.h)
  // Every parameter in layer order (the reference model's order), as the stages compute with them.
  std::vector<torch::Tensor> parameters() const;
  const LossScaler& loss_scaler() const { return scaler_; }
  // Per stage, the most micro-batches in flight during the last step.
  const std::vector<int>& last_max_in_flight() const { return last_max_in_flight_; }

  // Every span of the first kMaxTraceSteps steps, on one clock (seconds since the trainer was
  // built), with each stage's optimizer step; empty unless keep_trace. For --trace.
  static constexpr int64_t kMaxTraceSteps = 2000;
  const std::vector<SimEvent>& trace_events() const { return trace_events_; }
  // Medians over the last kSummarySteps steps, leaving out the first (warm-up) when there are others.
  static constexpr size_t kSummarySteps = 200;
  PipelineSummary summary() const;

  // The same stages one op at a time, a GPU op waiting for its own end: the unpipelined way of
  // running a split, for benchmarks to compare against.
  void set_one_op_at_a_time(bool on) { one_op_at_a_time_ = on; }
  // Each GPU the stages use, with its allocator's peaks (since construction) and cap.
  std::vector<VramLine> vram() const;
  // Pinned host memory the staging rings hold.
  int64_t pinned_bytes() const;
  // In the last step: copies into a device that found their tensor written into the staging ring
  // by the sending op (Transfer::staging), and all copies into a device from host memory.
  struct StagedCopies {
    int by_op = 0;
    int total = 0;
  };
  StagedCopies staged_copies() const;

 private:
  class OpScope;
  void hold_devices_to_the_plan();
  void build_stages();
  void build_transfers();
  // Runs the schedule; returns its spans on the step's clock.
  std::vector<SimEvent> run_step_ops(const TokenBatch& batch, std::vector<double>& losses);
  // A gradient that is not finite never reaches an optimizer: the step ends with a PipelineError
  // naming the parameter, the micro-batch and the step, every gradient and stash cleared.
  [[noreturn]] void refuse_non_finite_gradient(const TokenBatch& batch, double grad_norm);
  std::optional<std::string> locate_non_finite_gradient(const TokenBatch& batch);
  void zero_grads();
  std::vector<std::vector<torch::Tensor>> stage_gradients();  // per stage, where its gradients accumulate
  // Every stage's stash (or a streamed stage's checkpoints) dropped, and every gradient zeroed.
  void clear_stashes();

  RunConfig run_;
  Plan plan_;
  HardwareSpec hardware_;
  LossScaler scaler_;
  Corpus corpus_;
  // Per stage, one of the two: a resident Stage, or a StreamedStage (weights streamed from RAM,
  // running layer-major: its ops are blocks).
  std::vector<std::unique_ptr<Stage>> stages_;
  std::vector<std::unique_ptr<StreamedStage>> streamed_;
  int64_t model_params_ = 0;  // for a layerwise update's per-layer clipping shares
  std::vector<std::unique_ptr<StageDevice>> devices_;  // how each stage's ops run
  std::vector<DeviceId> gpus_;                          // distinct devices of their own memory the stages use
  bool one_op_at_a_time_ = false;
  std::vector<std::unique_ptr<Transfer>> send_forward_, send_backward_;
  std::vector<torch::Dtype> boundary_types_;  // per boundary: what crosses it (the plan's)
  std::vector<std::string> forward_resources_, backward_resources_;
  int64_t steps_done_ = 0;
  mutable std::future<std::string> pending_save_;  // a background save's path
  bool keep_trace_;
  std::chrono::steady_clock::time_point created_;
  std::vector<SimEvent> trace_events_;
  // Per step, on the step's own clock: the first step (warm-up) apart, then the latest ones.
  std::vector<SimEvent> first_step_timeline_;
  std::deque<std::vector<SimEvent>> step_timelines_;
  std::vector<int> last_max_in_flight_;
  ProcessGroups groups_;
  std::unique_ptr<ReplicaSums> replica_sums_;
  // Stage s runs on another host: no Stage here, its ops are no-ops.
  bool remote(int s) const { return plan_.map.stages[static_cast<size_t>(s)].host != groups_.host; }
  int host_of_layer(int64_t layer) const;
  // Host 0's side of a checkpoint: layer `layer`'s state, sent by the host that computes it.
  std::vector<std::pair<std::string, torch::Tensor>> fetch_layer_state(int64_t layer) const;
  // Another host's side: its layers' states to host 0, in layer order.
  void send_layer_states() const;
  // Σ over the pipeline's hosts (and then the replicas, when `replicas`) of a value each holds part of.
  double sum_over_processes(double value, bool replicas) const;
};

}  // namespace pipetrain
