// From a model, hardware and stage map to the durations the simulator replays.
//
//   forward  = Σ forward FLOPs per token * tokens / rate,   backward likewise (plus a forward
//              again under activation checkpointing, which recomputes before it differentiates)
//   rate     = the device's sustained FLOP/s in the dtype it computes in (memory/precision.h); a
//              CPU stage with its own cores gets the rate of that many cores and its own resource
//              "cpu[s]"; CPU stages without cores share "cpu", the pool of the cores no stage owns,
//              at that pool's rate (scheduler/cores.h)
//   norm     = its gradients' bytes / the device's memory bandwidth (one read)
//   optimizer = the bytes its optimizer moves per parameter / the bandwidth where it runs
//              (optimizer_step_bytes_per_param); for a GPU stage whose optimizer lives in RAM, its
//              gradients out and its weights back over the links, overlapped with the CPU's step:
//              the longest of the three
//   streamed = a stage whose weights live in RAM (memory/stage_map.h) is timed per layer: its
//              compute as above; its weights' visit = the longer of their copy in (16-bit bytes over
//              the H2D link) and their conversion from the float32 masters into the pinned slot
//              ((4 + c) bytes per parameter over the CPU's memory bandwidth); its gradients' copy
//              out over the D2H link; its optimizer step in RAM (plus a read of its gradients for
//              the layer's own norm) per layer with layerwise_update, else after the pipeline like
//              any stage's, its norm and step over the CPU's bandwidth (the gradients are in RAM)
//   lanes    = a CPU stage with lanes times one lane's ops on its share of the cores (cores / lanes);
//              a backward wave also waits for lanes 1..L-1 to add their gradients in turn
//              (lane_add_seconds each)
//   transfer = boundary bytes / link bandwidth + latency, on the link's own resource
//              ("cpu->cuda:0" is H2D, "cuda:0->cpu" is D2H); CPU to CPU is a free hand-off. Into a
//              GPU, the sending CPU stage's op writes its output into the pinned ring slot
//              (staging_write_seconds, charged to that op: forward for an activation, backward for
//              a gradient).
// A measured profile (pipetrain profile: hardware.measured, per-layer times for this model and
// micro-batch size, per device and core count) replaces the FLOP-based durations: a stage's op time
// is then the sum of its layers' measured times, and its optimizer step too. Times of fewer cores
// than the CPU's were measured beside copies on the other cores; StageTiming::alone_ratio carries
// what they become with those cores idle (simulate_with_neighbours).
#pragma once

#include <vector>

#include "memory/hardware.h"
#include "memory/layer_prefix.h"
#include "memory/stage_map.h"
#include "scheduler/plan_options.h"
#include "scheduler/simulator.h"

namespace pipetrain {

// Which model and micro-batch size measured times belong to: "V256 H256 L4 A4 I1024 T128 float32 b2".
std::string profile_key(const ModelConfig& model, int64_t micro_batch_size);

// Stage durations from measured per-layer times when the hardware has them for this model, device
// and core count; from FLOPs / rate otherwise.
class StageTimer {
 public:
  StageTimer(const ModelConfig& model, const HardwareSpec& hardware, const PlanOptions& options);
  // True when the hardware's measured times are for this model and micro-batch size.
  bool uses_measured_times() const { return !sums_.empty(); }
  // Layers [first, last] placed as `place` (where they compute, where their weights and optimizer
  // live), computing with `cores` (a CPU stage's own cores, or the size of the pool it shares;
  // ignored for a GPU). The compute resource is left empty.
  // With `per_layer`, a streamed stage's layers are listed (what the simulator replays); without,
  // only its totals are filled, in O(1) (what the planner's bound needs: streamed_work).
  StageTiming time(const Placement& place, int cores, int64_t first, int64_t last, bool checkpointing,
                   bool per_layer) const;
  // A streamed range's work per step on its copy engines and the CPU optimizer: its weights' loads
  // (one visit; a step makes two), its gradients' copies out, its layer steps.
  struct StreamedWork {
    double load_seconds = 0.0;
    double gradient_seconds = 0.0;
    double step_seconds = 0.0;
  };
  StreamedWork streamed_work(DeviceId device, int64_t first, int64_t last) const;
  // One lane's gradients of layers [first, last] added into the stage's (the function below).
  double lane_add_seconds(int64_t first, int64_t last) const;

 private:
  struct Sums {
    DeviceId device;
    int cores;
    std::vector<double> forward, backward, optimizer;  // prefix sums, size layers + 1
    double alone_ratio = 1.0;                          // LayerTimes::alone_ratio
  };
  // Prefix sums of each streamed layer's copies and step, per GPU of the hardware.
  struct StreamSums {
    DeviceId device;
    std::vector<double> load, gradient, step;  // size layers + 1
  };
  const Sums* find(DeviceId device, int cores) const;
  // Layer l streamed into `device`: its copies and step (not its compute).
  StreamedLayerTiming streamed_layer(DeviceId device, int64_t l) const;
  // A streamed range: per layer (with per_layer), and its norm and step after the pipeline
  // (t already holds the range's totals).
  void time_streamed(StageTiming& t, DeviceId device, const Sums* measured, int64_t first, int64_t last,
                     bool checkpointing, bool per_layer) const;

  const ModelConfig& model_;
  const HardwareSpec& hardware_;
  PlanOptions options_;
  LayerPrefix prefix_;  // FLOPs and parameters, which do not depend on the dtype
  std::vector<Sums> sums_;
  std::vector<StreamSums> stream_sums_;
};

StageTiming stage_timing(const RangeCosts& range, const ModelConfig& model, const DeviceSpec& device,
                         const std::string& resource, int cores, const PlanOptions& options);

// The bytes one parameter's optimizer step moves through memory where it runs: the fused CPU AdamW
// reads and writes the float32 master and both moments once, reads the gradient and writes the
// 16-bit weights (28 bytes in float32; not the weights for a streamed stage, whose weights are
// converted from the masters on their way in); LibTorch's optimizers make a pass per operation
// (OptimizerDef::library_step_bytes), plus the gradient's conversion and the weights' refresh when
// the master is a copy.
double optimizer_step_bytes_per_param(const OptimizerConfig& optimizer, Dtype compute, const Placement& place);

// Seconds of one stage's optimizer step and of its gradient-norm pass, from bytes over bandwidth.
double optimizer_seconds(const RangeCosts& range, const HardwareSpec& hardware, const Placement& place,
                         const PlanOptions& options);
double norm_seconds(const RangeCosts& range, const DeviceSpec& device, const PlanOptions& options);
// One lane's gradients added into its stage's (stages/stage.h lanes): each gradient read twice and
// written once (then zeroed), over the CPU's memory bandwidth.
double lane_add_seconds(int64_t params, const DeviceSpec& cpu, const PlanOptions& options);

// The link a tensor takes from `from` to `to`, or nullptr when it is handed over without a copy
// (the same device, or two stages that both compute in host memory).
const LinkSpec* copy_link(const HardwareSpec& hardware, DeviceId from, DeviceId to);
// A copy of `bytes` over `link`: bytes / bandwidth + latency, on the link's own copy engine.
double link_seconds(const LinkSpec& link, double bytes);
// A boundary's activation or gradient from `from` to `to`: the link's copy (0 for a hand-off).
double boundary_copy_seconds(const HardwareSpec& hardware, DeviceId from, DeviceId to, double bytes);
// Out of host memory into a device of its own memory, the sending op's write of its output into the
// pinned ring slot (read and written once over the CPU's memory bandwidth); 0 otherwise.
double staging_write_seconds(const HardwareSpec& hardware, DeviceId from, DeviceId to, double bytes);
// The staging writes of a plan's boundaries added to the ops that do them: stage b's forward for an
// activation into stage b + 1's device, stage b + 1's backward for a gradient into stage b's.
void charge_staging_writes(const HardwareSpec& hardware, const StageMap& map, const std::vector<double>& boundary_bytes,
                           std::vector<StageTiming>& stages);

// A boundary's tensor to a stage on another host: bytes over the network plus its latency (0 when
// the hardware does not describe its network).
double network_seconds(const HardwareSpec& hardware, double bytes);
// A stage of `params` parameters summing its float32 gradients over `replicas` (a ring all-reduce
// on the network, plus gathering and writing back the buffer in host memory); 0 for one replica.
double replica_sum_seconds(const HardwareSpec& hardware, int64_t params, int64_t replicas);
int64_t range_param_count(const ModelConfig& model, int64_t first, int64_t last);

TransferTiming transfer_timing(int64_t boundary_bytes_per_token, const ModelConfig& model, const HardwareSpec& hardware,
                               DeviceId from, DeviceId to, const PlanOptions& options);

std::vector<StageTiming> stage_timings(const ModelConfig& model, const HardwareSpec& hardware, const StageMap& map,
                                       const PlanOptions& options);
// Per boundary, from the bytes per token crossing it (memory/estimate.h boundary_bytes_per_token).
std::vector<TransferTiming> transfer_timings(const std::vector<int64_t>& boundary_bytes_per_token, const ModelConfig& model,
                                             const HardwareSpec& hardware, const StageMap& map,
                                             const PlanOptions& options);

}  // namespace pipetrain
