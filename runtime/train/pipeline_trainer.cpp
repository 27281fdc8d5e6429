#include "runtime/train/pipeline_trainer.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <tuple>

#include "memory/errors.h"
#include "memory/machine_probe.h"
#include "memory/param_count.h"
#include "memory/stage_map.h"
#include "runtime/backends/cpu/core_pinning.h"
#include "runtime/backends/cpu/host_allocator.h"
#include "runtime/backends/cpu/threads.h"
#include "runtime/backends/registry.h"
#include "runtime/train/lr_schedule.h"
#include "runtime/train/network_transfer.h"
#include "runtime/train/run_plan.h"
#include "scheduler/executor.h"
#include "scheduler/statistics.h"
#include "stages/optim.h"

namespace pipetrain {
namespace {

using Clock = std::chrono::steady_clock;

std::string error_text(const std::exception& e) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) return c10_error->what_without_backtrace();
  return e.what();
}

std::string describe_stage(const ModelConfig& model, const StageMap& map, int s) {
  const StageSpec& st = map.stages[static_cast<size_t>(s)];
  return "stage " + std::to_string(s) + " (" + st.device.name() + ", " + describe_range(model, st.first, st.last) + ")";
}

// What a stage's op sends across a boundary: `out` in the boundary's dtype, written by the op
// itself (on its threads) into the transfer's staging slot when the transfer offers one, so that
// a copy into a GPU reads it from pinned memory with no memcpy of its own (backends/backend.h).
torch::Tensor to_boundary(Transfer& transfer, int k, const torch::Tensor& out, torch::ScalarType dtype) {
  torch::Tensor slot = transfer.staging(k, out.sizes(), dtype);
  if (!slot.defined()) return out.to(dtype);
  torch::NoGradGuard no_grad;  // the receiver starts a graph of its own
  slot.copy_(out);
  return slot;
}

}  // namespace

// While one op of a stage runs: its cores (the thread is pinned to them) and its intra-op thread
// count; both are restored after. (Stages of one group take turns in the executor: stage_groups.)
class PipelineTrainer::OpScope {
 public:
  // micro_batch: the op's, which picks its lane's cores in a stage with lanes; -1 for the stage's
  // work outside its ops (every core of its group).
  OpScope(PipelineTrainer& trainer, int stage, int micro_batch = -1) : previous_threads_(at::get_num_threads()) {
    const CoreAssignment& cores = trainer.plan_.cores;
    const int group = cores.group_of_stage[static_cast<size_t>(stage)];
    if (group < 0) {  // a GPU stage's feeding thread: launches and waits, one thread
      at::set_num_threads(1);
      return;
    }
    const CoreGroup& g = cores.groups[static_cast<size_t>(group)];
    at::set_num_threads(trainer.run_.train.intra_op_threads > 0 ? static_cast<int>(trainer.run_.train.intra_op_threads)
                                                                : g.intra_op_threads);
    pin_.emplace(g.lanes > 1 && micro_batch >= 0 ? g.lane_cpus(micro_batch % g.lanes) : g.cpus);
  }
  ~OpScope() {
    pin_.reset();
    at::set_num_threads(previous_threads_);
  }
  OpScope(const OpScope&) = delete;
  OpScope& operator=(const OpScope&) = delete;

 private:
  int previous_threads_;
  std::optional<PinToCores> pin_;
};

PipelineTrainer::PipelineTrainer(const RunConfig& run, const Plan& plan, const HardwareSpec& hardware, bool keep_trace,
                                 const ProcessGroups& groups)
    : run_(recorded_config(run, plan)),
      plan_(plan),
      hardware_(hardware),
      scaler_(plan.options.precision),
      corpus_(run.data.files, run.model.seq_len, run.data.val_fraction, static_cast<uint64_t>(run.train.seed),
              corpus_tokenizer(run.data.tokenizer, run.data.files)),
      keep_trace_(keep_trace),
      created_(Clock::now()),
      groups_(groups) {
  validate_stage_map(plan_.map, run_.model, hardware_);
  const int hosts = plan_.map.num_hosts();
  if ((hosts > 1) != (groups_.pipeline != nullptr) || (groups_.pipeline && groups_.pipeline->size() != hosts)) {
    throw InputError("the stage map runs on " + std::to_string(hosts) + " host(s) but this process's pipeline group holds " +
                     std::to_string(groups_.pipeline ? groups_.pipeline->size() : 1));
  }
  if ((run_.train.replicas > 1) != (groups_.replicas != nullptr) || (groups_.replicas && groups_.replicas->size() != run_.train.replicas)) {
    throw InputError("train.replicas is " + std::to_string(run_.train.replicas) + " but the replica group holds " +
                     std::to_string(groups_.replicas ? groups_.replicas->size() : 1) + " processes");
  }
  for (const StageSpec& st : plan_.map.stages) {
    const Dtype compute = plan_.options.precision.compute(st.device);
    if (const auto why = cannot_compute(st.device, to_torch_dtype(compute))) {
      throw InputError("precision." + std::string(st.device.is_cpu() ? "cpu" : "cuda") + " is " + dtype_name(compute) +
                       ", which this build cannot compute in: " + *why + "; choose another dtype in the config's precision");
    }
  }
  // A stage with lanes sums its micro-batches' gradients in ascending order (stages/stage.h).
  for (int s = 0; s < plan_.map.num_stages(); ++s) {
    if (plan_.map.stages[static_cast<size_t>(s)].lanes == 1) continue;
    int expected = 0;
    for (const Op& op : plan_.schedule.stages[static_cast<size_t>(s)]) {
      if (op.kind != OpKind::kBackward) continue;
      if (op.micro_batch != expected++) {
        throw InputError("stage " + std::to_string(s) + " has lanes, which need its backwards in micro-batch order; schedule " +
                         plan_.schedule.kind.name() + " runs them as " + format_ops(plan_.schedule.stages[static_cast<size_t>(s)]));
      }
    }
  }
  // Explicit thread counts in the config win over the core groups' choice.
  set_blas_threads(run_.train.blas_threads > 0 ? static_cast<int>(run_.train.blas_threads) : plan_.cores.blas_threads);
  hold_devices_to_the_plan();
  build_stages();
  build_transfers();
  if (groups_.replicas) {
    if (plan_.options.layerwise_update) {
      throw InputError("train.layerwise_update steps each streamed layer during the backward, before the replicas could sum "
                       "its gradient: with train.replicas " + std::to_string(run_.train.replicas) + " set it to false");
    }
    std::vector<bool> here;
    for (int s = 0; s < num_stages(); ++s) here.push_back(!remote(s));
    replica_sums_ = std::make_unique<ReplicaSums>(*groups_.replicas, here);
  }
}

// Each device with memory of its own gets its caching allocator held to the memory the plan was
// made for, less the CUDA context's share (DeviceSpec::allocator_bytes), so a large card stands in
// for the hardware description's (an 8 GiB card on an H100) as strictly as the real card would.
void PipelineTrainer::hold_devices_to_the_plan() {
  for (const StageSpec& st : plan_.map.stages) {
    // A stand-in's memory is host memory, held to its budget by the plan alone.
    if (st.host != groups_.host) continue;
    if (st.device.kind != DeviceKind::kCuda || std::find(gpus_.begin(), gpus_.end(), st.device) != gpus_.end()) continue;
    gpus_.push_back(st.device);
    cap_device_memory(st.device, hardware_.device(st.device).allocator_bytes());
    reset_device_memory_peak(st.device);
  }
}

// A Stage per stage of the plan, on the device where its layers compute.
void PipelineTrainer::build_stages() {
  StageOptions options;
  options.checkpointing = plan_.options.checkpointing;
  options.optimizer = plan_.options.optimizer;
  // The optimizer phase runs when no stage computes: a CPU optimizer may use every core.
  options.optimizer_threads = std::max(1, std::min(hardware_.cpu().cores, static_cast<int>(usable_cpu_ids().size())));
  bool any_resident = false;
  for (const StageSpec& st : plan_.map.stages) {
    const Placement place = st.placement();
    const uint64_t seed = static_cast<uint64_t>(run_.train.seed);
    if (st.host != groups_.host) {  // another host computes it: nothing here, its ops are no-ops
      stages_.push_back(nullptr);
      streamed_.push_back(nullptr);
      devices_.push_back(make_stage_device(DeviceId::cpu(), plan_.options.micro_batches));
      continue;
    }
    if (place.streamed()) {
      StreamedStageOptions streamed;
      streamed.compute = plan_.options.precision.compute(place.compute);
      streamed.window_layers = plan_.options.window_layers;
      streamed.optimizer = plan_.options.optimizer;
      streamed.optimizer_threads = options.optimizer_threads;
      const DeviceId device = place.compute;
      streamed_.push_back(std::make_unique<StreamedStage>(
          run_.model, st.first, st.last, seed, streamed,
          [device](int slots, int64_t elements, torch::Dtype dtype) { return make_weight_stream(device, slots, elements, dtype); }));
      stages_.push_back(nullptr);
    } else {
      options.device = torch_device(place.compute);
      options.compute = plan_.options.precision.compute(place.compute);
      options.optimizer_home = torch_device(place.optimizer);
      options.lanes = st.lanes;
      stages_.push_back(std::make_unique<Stage>(run_.model, st.first, st.last, seed, options));
      streamed_.push_back(nullptr);
      any_resident = true;
    }
    devices_.push_back(make_stage_device(st.device, plan_.options.micro_batches));
  }
  model_params_ = total_param_count(run_.model);
  // A layerwise update clips each layer on its own as it steps during the backward; a resident
  // stage steps after the backward, on the global norm: the two rules would be mixed in one model.
  if (plan_.options.layerwise_update && any_resident) {
    throw InputError("train.layerwise_update steps each streamed layer as its gradient arrives, so every stage must "
                     "stream its weights (weights: cpu); this plan has resident stages (drop layerwise_update, or stream them)");
  }
}

Stage& PipelineTrainer::stage(int s) {
  Stage* stage = stages_[static_cast<size_t>(s)].get();
  if (stage == nullptr) throw std::logic_error("stage " + std::to_string(s) + " streams its weights: see streamed_stage()");
  return *stage;
}

// Per boundary and direction, the transfer the plan sized: its staging ring's slots and bytes
// (memory/estimate.h counted the same), with the op that makes what crosses.
void PipelineTrainer::build_transfers() {
  const int m = plan_.options.micro_batches;
  for (size_t b = 0; b < plan_.boundaries.size(); ++b) {
    const BoundaryPlan& boundary = plan_.boundaries[b];
    boundary_types_.push_back(to_torch_dtype(boundary.dtype));
    const int from = static_cast<int>(b), to = from + 1;
    if (remote(from) || remote(to)) {
      // A boundary across hosts moves over the network; one of two other hosts moves nothing here.
      using Side = NetworkTransfer::Side;
      const int from_host = plan_.map.stages[b].host, to_host = plan_.map.stages[b + 1].host;
      const std::vector<int64_t> sizes = {plan_.options.micro_batch_size, run_.model.seq_len, run_.model.hidden_dim};
      const torch::Device on_from = remote(from) ? torch::Device(torch::kCPU) : torch_device(boundary.from);
      const torch::Device on_to = remote(to) ? torch::Device(torch::kCPU) : torch_device(boundary.to);
      const Side forward_side = !remote(from) ? Side::kSender : !remote(to) ? Side::kReceiver : Side::kNeither;
      const Side backward_side = !remote(to) ? Side::kSender : !remote(from) ? Side::kReceiver : Side::kNeither;
      const int tag = 2 * from * m;  // micro-batch k: forward tag + k, backward tag + m + k
      send_forward_.push_back(std::make_unique<NetworkTransfer>(*groups_.pipeline, forward_side, to_host == groups_.host ? from_host : to_host,
                                                                tag, sizes, boundary_types_.back(), on_to,
                                                                network_resource(from_host, to_host)));
      send_backward_.push_back(std::make_unique<NetworkTransfer>(*groups_.pipeline, backward_side, from_host == groups_.host ? to_host : from_host,
                                                                 tag + m, sizes, boundary_types_.back(), on_from,
                                                                 network_resource(to_host, from_host)));
    } else {
      const RingSpec forward{boundary.rings.forward_slots, boundary.rings.slot_bytes, m};
      const RingSpec backward{boundary.rings.backward_slots, boundary.rings.slot_bytes, m};
      send_forward_.push_back(make_transfer(boundary.from, boundary.to, forward, devices_[b].get(), EventKind::kForward));
      send_backward_.push_back(make_transfer(boundary.to, boundary.from, backward, devices_[b + 1].get(), EventKind::kBackward));
    }
    forward_resources_.push_back(send_forward_.back()->resource().empty() ? "send " + std::to_string(b) + "->" + std::to_string(b + 1)
                                                                          : send_forward_.back()->resource());
    backward_resources_.push_back(send_backward_.back()->resource().empty() ? "send " + std::to_string(b + 1) + "->" + std::to_string(b)
                                                                            : send_backward_.back()->resource());
  }
  if (pinned_bytes() > hardware_.pinned_bytes) {
    throw InputError("the staging rings need " + std::to_string(pinned_bytes()) + " bytes of pinned memory, but " +
                     hardware_.name + " allows " + std::to_string(hardware_.pinned_bytes) +
                     "; use a smaller train.micro_batch_size or fewer CPU/GPU boundaries");
  }
}

int64_t PipelineTrainer::pinned_bytes() const {
  int64_t total = 0;
  for (const auto& t : send_forward_) total += t->pinned_bytes();
  for (const auto& t : send_backward_) total += t->pinned_bytes();
  return total;
}

PipelineTrainer::StagedCopies PipelineTrainer::staged_copies() const {
  StagedCopies copies;
  for (size_t b = 0; b < plan_.boundaries.size(); ++b) {
    const BoundaryPlan& boundary = plan_.boundaries[b];
    const int m = plan_.options.micro_batches;
    if (!boundary.from.has_own_memory() && boundary.to.has_own_memory()) copies.total += m;
    if (!boundary.to.has_own_memory() && boundary.from.has_own_memory()) copies.total += m;
    copies.by_op += send_forward_[b]->staged_by_op() + send_backward_[b]->staged_by_op();
  }
  return copies;
}

std::vector<VramLine> PipelineTrainer::vram() const {
  std::vector<VramLine> lines;
  for (DeviceId gpu : gpus_) lines.push_back({gpu, device_memory_report(gpu)});
  return lines;
}

PipelineTrainer::~PipelineTrainer() {
  // A save still writing reads this trainer's state: it ends first. Its error, if any, is lost
  // here; a session calls finish_saves (or save_checkpoint) before the trainer goes.
  if (pending_save_.valid()) pending_save_.wait();
}

std::vector<int> PipelineTrainer::stage_lanes() const {
  std::vector<int> lanes;
  for (const StageSpec& st : plan_.map.stages) lanes.push_back(st.lanes);
  return lanes;
}

std::vector<std::string> PipelineTrainer::stage_resources() const {
  std::vector<std::string> names;
  for (int s = 0; s < static_cast<int>(stages_.size()); ++s) {
    const int group = plan_.cores.group_of_stage[static_cast<size_t>(s)];
    names.push_back(group < 0 ? plan_.map.stages[static_cast<size_t>(s)].device.name()
                              : plan_.cores.groups[static_cast<size_t>(group)].resource);
  }
  return names;
}

std::string PipelineTrainer::finish_saves() const {
  if (!pending_save_.valid()) return "";
  return pending_save_.get();
}

void PipelineTrainer::save_checkpoint_in_background(const std::string& run_dir, int64_t keep) const {
  finish_saves();
  if (groups_.host != 0) {  // host 0 writes; this host's layers go to it
    pending_save_ = std::async(std::launch::async, [this] {
      send_layer_states();
      return std::string();
    });
    return;
  }
  const LossScaler::State scale = scaler_.state();
  const std::map<std::string, double> scalars = {{"loss_scale", scale.scale},
                                                 {"loss_scale_clean_steps", static_cast<double>(scale.clean_steps)},
                                                 {"skipped_steps", static_cast<double>(scale.skipped)}};
  const std::map<std::string, std::string> inputs = {{"data", hex16(corpus_.fingerprint())},
                                                     {"tokenizer", hex16(corpus_.tokenizer_fingerprint())}};
  pending_save_ = std::async(std::launch::async, [this, run_dir, keep, scalars, inputs, step = steps_done_,
                                                  position = corpus_.position()] {
    return pipetrain::save_checkpoint(run_dir, *this, run_, step, position, keep, scalars, inputs);
  });
}

std::string PipelineTrainer::save_checkpoint(const std::string& run_dir, int64_t keep) const {
  save_checkpoint_in_background(run_dir, keep);
  return finish_saves();
}

void PipelineTrainer::resume_from(const CheckpointInfo& checkpoint) {
  finish_saves();
  load_checkpoint(checkpoint, run_.model, *this);
  steps_done_ = checkpoint.step;
  corpus_.set_position(checkpoint.data);
  // A checkpoint without them (written before loss scaling existed) restarts the scale.
  const auto scalar = [&](const char* name, double otherwise) {
    const auto it = checkpoint.scalars.find(name);
    return it == checkpoint.scalars.end() ? otherwise : it->second;
  };
  const LossScaler::State fresh = scaler_.state();
  scaler_.restore({scalar("loss_scale", fresh.scale), static_cast<int64_t>(scalar("loss_scale_clean_steps", 0.0)),
                   static_cast<int64_t>(scalar("skipped_steps", 0.0))});
}

std::vector<std::pair<std::string, torch::Tensor>> PipelineTrainer::layer_state(int64_t layer) const {
  if (host_of_layer(layer) != groups_.host) return fetch_layer_state(layer);
  for (size_t s = 0; s < stages_.size(); ++s) {
    const StageSpec& st = plan_.map.stages[s];
    if (layer < st.first || layer > st.last) continue;
    return stages_[s] ? stages_[s]->layer_state(layer) : streamed_[s]->layer_state(layer);
  }
  throw std::logic_error("no stage holds layer " + std::to_string(layer));
}

void PipelineTrainer::set_layer_state(int64_t layer, const std::vector<std::pair<std::string, torch::Tensor>>& tensors) {
  if (host_of_layer(layer) != groups_.host) return;  // its host restores it from the same file
  for (size_t s = 0; s < stages_.size(); ++s) {
    const StageSpec& st = plan_.map.stages[s];
    if (layer < st.first || layer > st.last) continue;
    if (streamed_[s]) {
      streamed_[s]->set_layer_state(layer, tensors);  // its masters live in host RAM
      return;
    }
    std::vector<std::pair<std::string, torch::Tensor>> here;
    for (const auto& [name, t] : tensors) here.emplace_back(name, t.to(stages_[s]->device()));
    stages_[s]->set_layer_state(layer, here);
    return;
  }
  throw std::logic_error("no stage holds layer " + std::to_string(layer));
}

std::vector<torch::Tensor> PipelineTrainer::parameters() const {
  std::vector<torch::Tensor> all;
  for (size_t s = 0; s < stages_.size(); ++s) {
    if (remote(static_cast<int>(s))) continue;
    for (const torch::Tensor& p : stages_[s] ? stages_[s]->parameters() : streamed_[s]->parameters()) all.push_back(p);
  }
  return all;
}

std::vector<std::vector<torch::Tensor>> PipelineTrainer::stage_gradients() {
  std::vector<std::vector<torch::Tensor>> all;
  for (size_t s = 0; s < stages_.size(); ++s) {
    if (remote(static_cast<int>(s))) all.emplace_back();
    else all.push_back(stages_[s] ? stages_[s]->gradients() : streamed_[s]->gradients());
  }
  return all;
}

std::vector<SimEvent> PipelineTrainer::run_step_ops(const TokenBatch& batch, std::vector<double>& losses) {
  const int num = num_stages();
  const int m = static_cast<int>(run_.train.micro_batches);
  const int64_t mbs = run_.train.micro_batch_size;
  // Mailboxes, [stage][micro-batch]: each slot is written by one node and read by the next, which the
  // graph's messages order.
  using Slots = std::vector<std::vector<torch::Tensor>>;
  Slots act_in(num, std::vector<torch::Tensor>(m)), act_out = act_in, grad_in = act_in, grad_out = act_in;

  auto guarded = [this](int s, const char* op, int k, const std::function<void()>& body) {
    try {
      OpScope scope(*this, s, k);
      body();
    } catch (const PipelineError&) {
      throw;
    } catch (const std::exception& e) {
      throw PipelineError(describe_stage(run_.model, plan_.map, s) + " failed in " + op + " of micro-batch " + std::to_string(k) +
                          " at step " + std::to_string(steps_done_ + 1) + ": " + error_text(e));
    }
  };

  // Replicas: a stage's gradients are summed as soon as its last backward of the step has ended.
  std::vector<std::atomic<int>> backwards_done(static_cast<size_t>(num));
  auto backward_ended = [&](int s, int count) {
    if (replica_sums_ && (backwards_done[static_cast<size_t>(s)] += count) == m) {
      replica_sums_->stage_ready(s, stages_[static_cast<size_t>(s)] ? stages_[static_cast<size_t>(s)]->gradients()
                                                                     : streamed_[static_cast<size_t>(s)]->gradients());
    }
  };

  std::vector<StageCallbacks> callbacks(static_cast<size_t>(num));
  for (int s = 0; s < num; ++s) {
    if (remote(s)) {  // computed on another host: here its ops only keep the schedule's order
      if (plan_.map.stages[static_cast<size_t>(s)].placement().streamed()) {
        callbacks[static_cast<size_t>(s)].forward_block = [] {};
        callbacks[static_cast<size_t>(s)].backward_block = [] {};
      } else {
        callbacks[static_cast<size_t>(s)].forward = [](int) {};
        callbacks[static_cast<size_t>(s)].backward = [](int) {};
      }
      continue;
    }
    if (StreamedStage* streamed = streamed_[static_cast<size_t>(s)].get()) {
      // Layer-major: every micro-batch at once, each way (scheduler/executor.h forward_block).
      callbacks[static_cast<size_t>(s)].forward_block = [&, s, streamed] {
        guarded(s, "forward", -1, [&] {
          std::vector<torch::Tensor> inputs;
          for (int k = 0; k < m; ++k) {
            inputs.push_back(s == 0 ? batch.inputs.narrow(0, k * mbs, mbs).to(streamed->device()) : std::move(act_in[s][k]));
          }
          if (!streamed->is_last()) {
            std::vector<torch::Tensor> outputs = streamed->forward(inputs);
            for (int k = 0; k < m; ++k) {
              act_out[s][k] = to_boundary(*send_forward_[static_cast<size_t>(s)], k, outputs[static_cast<size_t>(k)],
                                          boundary_types_[static_cast<size_t>(s)]);
            }
            return;
          }
          std::vector<torch::Tensor> targets;
          for (int k = 0; k < m; ++k) targets.push_back(batch.targets.narrow(0, k * mbs, mbs).to(streamed->device()));
          const std::vector<double> step_losses = streamed->forward_loss(inputs, targets, static_cast<double>(m) / scaler_.scale());
          for (int k = 0; k < m; ++k) {
            const double loss = step_losses[static_cast<size_t>(k)];
            if (!std::isfinite(loss)) throw std::runtime_error("loss is " + std::to_string(loss) + " (try a lower train.lr)");
            losses[static_cast<size_t>(k)] = loss;
          }
        });
      };
      callbacks[static_cast<size_t>(s)].backward_block = [&, s, streamed] {
        guarded(s, "backward", -1, [&] {
          std::vector<torch::Tensor> grads;
          for (int k = 0; !streamed->is_last() && k < m; ++k) grads.push_back(std::move(grad_in[s][k]));
          const std::vector<torch::Tensor> out = streamed->backward(grads);
          for (int k = 0; s > 0 && k < m; ++k) {
            grad_out[s][k] = to_boundary(*send_backward_[static_cast<size_t>(s - 1)], k, out[static_cast<size_t>(k)],
                                         boundary_types_[static_cast<size_t>(s - 1)]);
          }
        });
        backward_ended(s, m);
      };
      continue;
    }
    Stage& stage = *stages_[static_cast<size_t>(s)];
    StageDevice& device = *devices_[static_cast<size_t>(s)];
    auto on_device = [this, &device](EventKind kind, int k, const std::function<void()>& body) {
      device.run_op(kind, k, body);
      if (one_op_at_a_time_) device.synchronize();
    };
    callbacks[static_cast<size_t>(s)].forward = [&, s, on_device](int k) {
      guarded(s, "forward", k, [&] { on_device(EventKind::kForward, k, [&] {
        torch::Tensor x = s == 0 ? batch.inputs.narrow(0, k * mbs, mbs).to(stage.device()) : std::move(act_in[s][k]);
        if (!stage.is_last()) {
          // Converted to the boundary's dtype (and staged) inside the op, so a copy out of a GPU,
          // which waits for exactly this op, finds it done.
          act_out[s][k] = to_boundary(*send_forward_[static_cast<size_t>(s)], k, stage.forward(k, x),
                                      boundary_types_[static_cast<size_t>(s)]);
          return;
        }
        const torch::Tensor targets = batch.targets.narrow(0, k * mbs, mbs).to(stage.device());
        // The loss is multiplied by the loss scale (1 without scaling) and divided by M.
        const double loss = stage.forward_loss(k, x, targets, static_cast<double>(m) / scaler_.scale());
        if (!std::isfinite(loss)) {
          throw std::runtime_error("loss is " + std::to_string(loss) + " (try a lower train.lr)");
        }
        losses[static_cast<size_t>(k)] = loss;
      }); });
    };
    callbacks[static_cast<size_t>(s)].backward = [&, s, on_device](int k) {
      guarded(s, "backward", k, [&] { on_device(EventKind::kBackward, k, [&] {
        torch::Tensor g = stage.backward(k, stage.is_last() ? torch::Tensor() : std::move(grad_in[s][k]));
        if (s > 0) {  // inside the op, as above
          grad_out[s][k] = to_boundary(*send_backward_[static_cast<size_t>(s - 1)], k, g, boundary_types_[static_cast<size_t>(s - 1)]);
        }
      }); });
      backward_ended(s, 1);
    };
  }
  std::vector<BoundaryCallbacks> boundaries(static_cast<size_t>(num - 1));
  for (int b = 0; b + 1 < num; ++b) {
    Transfer& forward = *send_forward_[static_cast<size_t>(b)];
    Transfer& backward = *send_backward_[static_cast<size_t>(b)];
    boundaries[static_cast<size_t>(b)].send_activation = [&, b](int k) {
      act_in[b + 1][k] = forward.send(k, act_out[b][k]);
      act_out[b][k] = torch::Tensor();
    };
    boundaries[static_cast<size_t>(b)].send_gradient = [&, b](int k) {
      grad_in[b][k] = backward.send(k, grad_out[b + 1][k]);
      grad_out[b + 1][k] = torch::Tensor();
    };
  }

  ExecutorOptions options;
  options.stage_resources = stage_resources();
  options.stage_groups = one_op_at_a_time_ ? std::vector<int>(static_cast<size_t>(num), 0) : plan_.cores.group_of_stage;
  if (!one_op_at_a_time_) options.stage_lanes = stage_lanes();
  for (int s = 0; s < num; ++s) {
    if (remote(s)) options.stage_groups[static_cast<size_t>(s)] = -1;  // a no-op waits for no one's cores
  }
  options.forward_resources = forward_resources_;
  options.backward_resources = backward_resources_;
  for (auto& d : devices_) d->begin_step();
  for (auto& t : send_forward_) t->begin_step();
  for (auto& t : send_backward_) t->begin_step();
  ExecutionReport report = run_schedule(plan_.schedule, callbacks, boundaries, options);
  last_max_in_flight_ = report.max_in_flight;

  // What a device timed itself replaces the host's view of it: a GPU op's span is when the GPU ran
  // it, not when the host launched it; a copy's is when the copy engine moved the bytes.
  std::map<std::tuple<EventKind, int, int>, DeviceSpan> timed;
  for (int s = 0; s < num; ++s) {
    for (const DeviceSpan& d : devices_[static_cast<size_t>(s)]->finish_step()) timed[{d.kind, s, d.micro_batch}] = d;
  }
  for (int b = 0; b + 1 < num; ++b) {
    for (DeviceSpan d : send_forward_[static_cast<size_t>(b)]->finish_step()) timed[{EventKind::kSendActivation, b, d.micro_batch}] = d;
    for (DeviceSpan d : send_backward_[static_cast<size_t>(b)]->finish_step()) timed[{EventKind::kSendGradient, b + 1, d.micro_batch}] = d;
  }
  if (!timed.empty()) {
    const double origin = std::chrono::duration<double>(report.started.time_since_epoch()).count();
    for (SimEvent& e : report.events) {
      const auto it = timed.find({e.kind, e.stage, e.micro_batch});
      if (it == timed.end()) continue;
      e.start = it->second.start - origin;
      e.end = it->second.end - origin;
    }
  }
  return report.events;
}

StepRecord PipelineTrainer::train_step() {
  const TrainConfig& t = run_.train;
  const auto start = Clock::now();
  const int64_t rows = t.micro_batch_size * t.micro_batches;
  // Every replica reads the global batch, so that all keep one data position, and trains on its share.
  const int64_t replicas = run_.train.replicas;
  std::vector<int64_t> tokens = corpus_.next_train_batch(rows * replicas);
  if (groups_.replicas) {
    const auto share = static_cast<std::ptrdiff_t>(rows * (run_.model.seq_len + 1));
    const int replica = groups_.replicas->rank();
    tokens = std::vector<int64_t>(tokens.begin() + replica * share, tokens.begin() + (replica + 1) * share);
  }
  const TokenBatch batch = to_token_batch(tokens, rows, run_.model.seq_len, torch::kCPU);

  // Process-wide, so set every step: another trainer in this process may have changed it.
  set_blas_threads(run_.train.blas_threads > 0 ? static_cast<int>(run_.train.blas_threads) : plan_.cores.blas_threads);
  zero_grads();
  const double lr = lr_at_step(t, steps_done_);
  // With a layerwise update the streamed layers step during the backward, each clipped to its share.
  for (auto& streamed : streamed_) {
    if (!streamed) continue;
    if (plan_.options.layerwise_update) {
      streamed->set_layerwise_step(LayerwiseStep{lr, t.grad_clip, scaler_.scale(), model_params_});
    } else {
      streamed->set_layerwise_step(std::nullopt);
    }
  }
  // A background save of the last step reads the state an optimizer update changes: streamed
  // stages with a layerwise update change it during the backward, the others after it.
  bool layerwise = false;
  for (const auto& streamed : streamed_) layerwise = layerwise || (streamed && streamed->layerwise());
  if (layerwise) finish_saves();
  std::vector<double> losses(static_cast<size_t>(t.micro_batches), 0.0);
  const double step_offset = std::chrono::duration<double>(Clock::now() - created_).count();
  std::vector<SimEvent> timeline;
  try {
    timeline = run_step_ops(batch, losses);
    if (replica_sums_) replica_sums_->finish(stage_gradients());
  } catch (...) {
    // No optimizer steps after a failed step; drop what the micro-batches left behind.
    if (replica_sums_) replica_sums_->reset();
    clear_stashes();
    throw;
  }

  finish_saves();  // before anything below changes the state it writes
  // The optimizer phase: the global gradient norm over every stage, then clipping and each
  // stage's optimizer step, in turn (scheduler/simulator.h replays the same order).
  const auto now = [&] { return std::chrono::duration<double>(Clock::now() - created_).count() - step_offset; };
  const std::vector<std::string> resources = stage_resources();
  double squared = 0.0;
  for (int s = 0; s < num_stages(); ++s) {
    if (remote(s)) continue;
    const double begin = now();
    const size_t i = static_cast<size_t>(s);
    squared += stages_[i] ? stages_[i]->grad_squared_norm() : streamed_[i]->grad_squared_norm();
    timeline.push_back({EventKind::kGradNorm, s, -1, resources[static_cast<size_t>(s)], begin, now()});
  }
  squared = sum_over_processes(squared, false);  // the replicas' gradients are equal by now
  const double scaled_norm = std::sqrt(squared);
  const bool clean = scaler_.step_is_clean(scaled_norm);  // an overflow under loss scaling: skip
  if (!std::isfinite(scaled_norm) && clean) refuse_non_finite_gradient(batch, scaled_norm);
  const double grad_norm = scaled_norm / scaler_.taken_scale();
  if (clean) {
    const double grad_scale = clip_scale(grad_norm, t.grad_clip) / scaler_.taken_scale();
    for (int s = 0; s < num_stages(); ++s) {
      if (remote(s)) continue;
      const double begin = now();
      {
        OpScope scope(*this, s);
        const size_t i = static_cast<size_t>(s);
        if (stages_[i]) {
          stages_[i]->step(lr, grad_scale);
        } else if (!streamed_[i]->layerwise()) {
          streamed_[i]->step(lr, grad_scale);
        }
        devices_[i]->synchronize();  // a GPU stage's step is done when the GPU is
      }
      timeline.push_back({EventKind::kOptimizer, s, -1, resources[static_cast<size_t>(s)], begin, now()});
    }
  }
  if (keep_trace_ && steps_done_ < kMaxTraceSteps) {
    for (SimEvent e : timeline) {
      e.start += step_offset;
      e.end += step_offset;
      trace_events_.push_back(e);
    }
  }
  const double bubble = bubble_fraction(timeline, num_stages(), stage_lanes());
  if (steps_done_ == 0) {
    first_step_timeline_ = std::move(timeline);
  } else {
    step_timelines_.push_back(std::move(timeline));
    if (step_timelines_.size() > kSummarySteps) step_timelines_.pop_front();
  }
  ++steps_done_;
  HostCachingAllocator::end_step();

  StepRecord record;
  record.step = steps_done_;
  double loss_sum = 0.0;
  for (double l : losses) loss_sum += l;
  loss_sum = sum_over_processes(loss_sum, true);  // the global batch's: its last stage's hosts hold it
  record.loss = loss_sum / static_cast<double>(t.micro_batches * replicas);
  record.lr = lr;
  record.grad_norm = grad_norm;
  record.step_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  record.tokens_per_s = static_cast<double>(rows * replicas * run_.model.seq_len) / record.step_seconds;
  record.peak_rss_bytes = peak_rss_bytes();
  for (DeviceId gpu : gpus_) {
    record.peak_vram_bytes = std::max(record.peak_vram_bytes.value_or(0), device_memory_report(gpu).peak_reserved_bytes);
  }
  record.bubble = bubble;
  if (scaler_.active()) {
    record.loss_scale = scaler_.taken_scale();
    record.skipped = !clean;
    record.skipped_steps = scaler_.skipped_steps();
  }
  return record;
}

// The step's micro-batches again, one at a time through the stages (no pipeline), until one leaves
// a gradient that is not finite: which parameter, and which micro-batch.
std::optional<std::string> PipelineTrainer::locate_non_finite_gradient(const TokenBatch& batch) {
  const int m = plan_.options.micro_batches;
  const int64_t mbs = plan_.options.micro_batch_size;
  clear_stashes();
  for (size_t s = 0; s < streamed_.size(); ++s) {
    if (streamed_[s]) return "(not located: stage " + std::to_string(s) + " streams its weights and runs every micro-batch at once)";
    if (remote(static_cast<int>(s))) return "(not located: stage " + std::to_string(s) + " runs on host " + std::to_string(plan_.map.stages[s].host) + ")";
  }
  for (int k = 0; k < m; ++k) {
    torch::Tensor x = batch.inputs.narrow(0, k * mbs, mbs);
    for (int s = 0; s < num_stages(); ++s) {
      OpScope scope(*this, s);
      Stage& stage = *stages_[static_cast<size_t>(s)];
      if (!stage.is_last()) {
        x = stage.forward(k, x.to(stage.device()));
      } else {
        stage.forward_loss(k, x.to(stage.device()), batch.targets.narrow(0, k * mbs, mbs).to(stage.device()), m);
      }
    }
    torch::Tensor grad;
    for (int s = num_stages() - 1; s >= 0; --s) {
      OpScope scope(*this, s);
      Stage& stage = *stages_[static_cast<size_t>(s)];
      grad = stage.backward(k, grad.defined() ? grad.to(stage.device()) : grad);
    }
    for (const auto& stage : stages_) {
      if (const auto where = stage->first_non_finite_gradient()) return *where + ", from micro-batch " + std::to_string(k);
    }
  }
  return std::nullopt;
}

void PipelineTrainer::refuse_non_finite_gradient(const TokenBatch& batch, double grad_norm) {
  std::optional<std::string> where;
  try {
    where = locate_non_finite_gradient(batch);
  } catch (const std::exception& e) {
    where = "(not located: replaying the micro-batches failed: " + error_text(e) + ")";
  }
  clear_stashes();
  throw PipelineError("a gradient is not finite at step " + std::to_string(steps_done_ + 1) + " (global norm " +
                      std::to_string(grad_norm) + "): " +
                      (where ? *where : "not reproduced when the micro-batches ran again one at a time") +
                      "; no optimizer stepped (try a lower train.lr, or train.grad_clip)");
}

double PipelineTrainer::validation_loss() {
  const int64_t rows = run_.train.micro_batch_size;
  // Tags above any a step's boundaries use (2 * boundaries * micro-batches of them).
  const int validation_tag = 2 * num_stages() * plan_.options.micro_batches;
  double total = 0.0;
  for (int64_t k = 0; k < run_.train.eval_batches; ++k) {
    const TokenBatch batch = to_token_batch(corpus_.val_batch(k, rows), rows, run_.model.seq_len, torch::kCPU);
    torch::Tensor x = batch.inputs;
    bool here = true;  // x is this host's: the batch, or what its last stage computed
    for (int s = 0; s < num_stages(); ++s) {
      const StageSpec& st = plan_.map.stages[static_cast<size_t>(s)];
      if (remote(s)) {  // hand x on to the host that computes stage s
        if (here && s > 0) groups_.pipeline->send(x.to(torch::kCPU, boundary_types_[static_cast<size_t>(s - 1)]), st.host, validation_tag + s);
        here = false;
        continue;
      }
      if (!here) {
        x = torch::empty({rows, run_.model.seq_len, run_.model.hidden_dim}, torch::TensorOptions().dtype(boundary_types_[static_cast<size_t>(s - 1)]));
        groups_.pipeline->recv(x, plan_.map.stages[static_cast<size_t>(s - 1)].host, validation_tag + s);
        here = true;
      }
      OpScope scope(*this, s);
      if (StreamedStage* streamed = streamed_[static_cast<size_t>(s)].get()) {
        x = streamed->infer(x.to(streamed->device()));  // the model has no dropout: eval and train agree
        continue;
      }
      Stage& stage = *stages_[static_cast<size_t>(s)];
      stage.layers()->eval();
      x = stage.infer(x.to(stage.device()));
      stage.layers()->train();
    }
    if (here) total += lm_loss(x, batch.targets.to(x.device())).item<double>();  // the last stage is this host's
  }
  return sum_over_processes(total, false) / static_cast<double>(run_.train.eval_batches);
}

double PipelineTrainer::sum_over_processes(double value, bool replicas) const {
  const auto sum = [&](Group* group) {
    if (group == nullptr) return;
    const torch::Tensor t = torch::full({1}, value, torch::kFloat64);
    group->sum(t);
    value = t.item<double>();
  };
  sum(groups_.pipeline);
  if (replicas) sum(groups_.replicas);
  return value;
}

int PipelineTrainer::host_of_layer(int64_t layer) const {
  for (const StageSpec& st : plan_.map.stages) {
    if (layer >= st.first && layer <= st.last) return st.host;
  }
  throw std::logic_error("no stage holds layer " + std::to_string(layer));
}

namespace {

// A layer's state crosses hosts as a header (one line per tensor: name, dtype, sizes) and then its
// tensors in that order, every message tagged with the layer.
std::string state_header(const std::vector<std::pair<std::string, torch::Tensor>>& state) {
  std::string header;
  for (const auto& [name, t] : state) {
    header += name + "\t" + std::to_string(static_cast<int>(t.scalar_type())) + "\t";
    for (int64_t d : t.sizes()) header += std::to_string(d) + ",";
    header += "\n";
  }
  return header;
}

}  // namespace

void PipelineTrainer::send_layer_states() const {
  if (groups_.saves == nullptr) throw std::logic_error("host " + std::to_string(groups_.host) + " has no checkpoint group");
  for (int64_t layer = 0; layer < run_.model.num_model_layers(); ++layer) {
    if (host_of_layer(layer) != groups_.host) continue;
    const auto state = layer_state(layer);
    const std::string header = state_header(state);
    const int tag = static_cast<int>(layer);
    groups_.saves->send(torch::full({1}, static_cast<int64_t>(header.size()), torch::kInt64), 0, tag);
    torch::Tensor bytes = torch::empty({static_cast<int64_t>(header.size())}, torch::kUInt8);
    std::memcpy(bytes.data_ptr(), header.data(), header.size());
    groups_.saves->send(bytes, 0, tag);
    for (const auto& [name, t] : state) groups_.saves->send(t.detach().to(torch::kCPU).contiguous(), 0, tag);
  }
}

std::vector<std::pair<std::string, torch::Tensor>> PipelineTrainer::fetch_layer_state(int64_t layer) const {
  if (groups_.saves == nullptr) throw std::logic_error("host " + std::to_string(groups_.host) + " has no checkpoint group");
  const int from = host_of_layer(layer);
  const int tag = static_cast<int>(layer);
  const torch::Tensor length = torch::zeros({1}, torch::kInt64);
  groups_.saves->recv(length, from, tag);
  const torch::Tensor bytes = torch::empty({length.item<int64_t>()}, torch::kUInt8);
  groups_.saves->recv(bytes, from, tag);
  const std::string header(static_cast<const char*>(bytes.data_ptr()), static_cast<size_t>(bytes.numel()));
  std::vector<std::pair<std::string, torch::Tensor>> state;
  size_t at = 0;
  while (at < header.size()) {
    const size_t end = header.find('\n', at);
    const std::string line = header.substr(at, end - at);
    at = end + 1;
    const size_t tab1 = line.find('\t'), tab2 = line.find('\t', tab1 + 1);
    std::vector<int64_t> sizes;
    for (size_t p = tab2 + 1; p < line.size();) {
      const size_t comma = line.find(',', p);
      sizes.push_back(std::stoll(line.substr(p, comma - p)));
      p = comma + 1;
    }
    const auto dtype = static_cast<torch::ScalarType>(std::stoi(line.substr(tab1 + 1, tab2 - tab1 - 1)));
    torch::Tensor t = torch::empty(sizes, torch::TensorOptions().dtype(dtype));
    groups_.saves->recv(t, from, tag);
    state.emplace_back(line.substr(0, tab1), t);
  }
  return state;
}

void PipelineTrainer::zero_grads() {
  for (size_t s = 0; s < stages_.size(); ++s) {
    if (stages_[s]) stages_[s]->zero_grad();
    else if (streamed_[s]) streamed_[s]->zero_grad();
  }
}

void PipelineTrainer::clear_stashes() {
  for (size_t s = 0; s < stages_.size(); ++s) {
    if (stages_[s]) stages_[s]->clear_stash();
    else if (streamed_[s]) streamed_[s]->clear_checkpoints();
  }
  zero_grads();
}

PipelineSummary PipelineTrainer::summary() const {
  PipelineSummary out;
  // The first step warms up allocators and caches; it is left out when there are others.
  std::vector<std::vector<SimEvent>> steps(step_timelines_.begin(), step_timelines_.end());
  if (steps.empty() && steps_done_ > 0) steps.push_back(first_step_timeline_);
  out.steps_measured = static_cast<int>(steps.size());
  if (steps.empty()) return out;
  std::vector<double> bubbles, spans;
  std::vector<std::vector<double>> busy(static_cast<size_t>(num_stages()));
  const std::vector<int> lanes = stage_lanes();
  for (const auto& events : steps) {
    bubbles.push_back(bubble_fraction(events, num_stages(), lanes));
    spans.push_back(pipeline_seconds(events));
    std::vector<double> op_seconds(static_cast<size_t>(num_stages()), 0.0);
    for (const SimEvent& e : events) {
      if (e.kind == EventKind::kForward || e.kind == EventKind::kBackward) op_seconds[static_cast<size_t>(e.stage)] += e.end - e.start;
    }
    for (int s = 0; s < num_stages(); ++s) {
      const double at_once = static_cast<double>(lanes[static_cast<size_t>(s)]);  // a wave's ops run together
      busy[static_cast<size_t>(s)].push_back(spans.back() > 0.0 ? op_seconds[static_cast<size_t>(s)] / at_once / spans.back() : 0.0);
    }
  }
  for (const auto& b : busy) out.stage_busy.push_back(median(b));
  out.measured_bubble = median(bubbles);
  out.measured_pipeline_seconds = median(spans);
  out.op_times = median_op_times(steps, num_stages(), stage_resources(), plan_.options.micro_batches, lanes);
  const int64_t tokens = run_.train.micro_batch_size * run_.train.micro_batches * run_.model.seq_len;
  const SimResult predicted = simulate(plan_.schedule, out.op_times.stages, out.op_times.transfers, tokens);
  out.predicted_bubble = predicted.bubble_fraction;
  out.predicted_pipeline_seconds = predicted.pipeline_seconds;
  out.predicted_step_seconds = predicted.step_seconds;
  return out;
}

}  // namespace pipetrain
