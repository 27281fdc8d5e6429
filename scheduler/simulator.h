// Discrete-event replay of a schedule with per-op durations.
//
// Each stage runs its op list (scheduler/schedule.h) strictly in order, exactly as the executor
// does. An op also waits for its input: forward k on stage s for forward k of stage s-1 plus the
// transfer between them; backward k for backward k of stage s+1 (or, on the last stage, its own
// forward k) plus the transfer back. Every op occupies a resource that runs one op at a time:
// a GPU, the CPU's shared pool (stages that share cores queue for it), a CPU stage's own cores,
// or a copy engine (H2D and D2H are separate resources and overlap compute). Among the ops that can
// run, the one that can start first goes first; ties go to the later stage (backward drains first).
// A streamed stage (StageTiming::streamed) runs its forwards, then its backwards, as layer-major
// blocks (streamed_block): a block starts once all its M inputs are there, and all M outputs leave
// when it is done. Its copies occupy the copy engines and its layer steps the optimizer resource.
// A stage with lanes runs waves of up to `lanes` ops of one kind at once (StageTiming::lanes); its
// resource counts a wave's time once.
// Then the optimizer phase, as the runtime orders it: once every stage's last backward is done,
// each stage's share of the global gradient norm in turn, then each stage's optimizer step in turn
// (no update may start before the norm is known: clipping needs it).
//
//   SimResult r = simulate(make_schedule(ScheduleKind::named("gpipe"), 3, 8), timings, transfers, tokens);
//   r.step_seconds; r.bubble_fraction; r.events;   // the events can be drawn as a trace
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "scheduler/schedule.h"

namespace pipetrain {

// One layer of a streamed stage: its compute per micro-batch, and per visit its weights' copy in,
// its gradients' copy out and (with layerwise_update) its optimizer step in RAM.
struct StreamedLayerTiming {
  double forward_seconds = 0.0;
  double backward_seconds = 0.0;
  double load_seconds = 0.0;      // float32 master -> 16-bit pinned slot -> GPU window
  double gradient_seconds = 0.0;  // GPU -> pinned slot
  double step_seconds = 0.0;      // 0 unless the layer steps as soon as its gradient arrives
};

// A streamed stage's layers, in order, and the resources its copies and steps occupy.
struct StreamedTiming {
  std::vector<StreamedLayerTiming> layers;
  int window_layers = 2;           // GPU slots for weights; a slot is refilled once its layer is done
  std::string load_resource;       // "cpu->cuda:0"
  std::string gradient_resource;   // "cuda:0->cpu"
  std::string step_resource;       // "optimizer (cpu)"
};

struct StageTiming {
  double forward_seconds = 0.0;   // one micro-batch
  double backward_seconds = 0.0;  // one micro-batch (including recomputation with checkpointing)
  double optimizer_seconds = 0.0; // once per step: the stage's optimizer step
  double norm_seconds = 0.0;      // once per step: its share of the global gradient norm
  std::string resource;           // "cpu" (shared pool), "cpu[1]" (own cores), "cuda:0"
  // A CPU stage with lanes (memory/stage_map.h) runs up to `lanes` consecutive ops of one kind at
  // once, one per lane, as a wave: it starts once all their inputs are there, takes one op's time
  // (forward_seconds is then one lane's, on its share of the cores), and all its outputs leave at
  // its end. backward_seconds then includes the lanes' gradients added in turn.
  int lanes = 1;
  // A CPU stage's op times were measured beside other work on the other cores; alone they take
  // alone_ratio of that (LayerTimes::alone_ratio). 1: no difference known.
  double alone_ratio = 1.0;
  StreamedTiming streamed;        // layers empty: the stage's weights are resident
  // Replicas (train.replicas > 1): once per step, its gradients summed with the other replicas'
  // over the network, as soon as its last backward has ended (stages in turn, last first, on
  // sum_resource); the gradient norm waits for every sum.
  double sum_seconds = 0.0;
  std::string sum_resource;       // "gradient sums", "gradient sums@host1"
  bool is_streamed() const { return !streamed.layers.empty(); }
};

// A streamed stage's forward (all M micro-batches) as a layer-major block starting at `start`:
// layer l's weights load once the copy engine is free and a window slot is (layer l - window done),
// and it computes all M micro-batches once loaded and the previous layer is done. Backward runs
// the layers in reverse, each also sending its gradients out (two GPU gradient slots: layer l's
// accumulation waits for layer l + 2's copy out) and, with step_seconds, stepping in RAM right
// after, on the same worker (a copy out waits for the previous layer's step). Returns the events,
// in order.
enum class BlockEventKind { kLoad, kCompute, kGradientOut, kStep };
struct BlockEvent {
  BlockEventKind kind;
  int layer;  // index into the stage's layers
  double start;
  double end;
};
std::vector<BlockEvent> streamed_block(const StreamedTiming& timing, bool forward, int micro_batches, double start);

// Between stage s and s+1. An empty resource means a plain hand-off (same device): no time.
struct TransferTiming {
  double forward_seconds = 0.0;   // activation s -> s+1
  double backward_seconds = 0.0;  // gradient s+1 -> s
  std::string forward_resource;   // e.g. "cpu->cuda:0"
  std::string backward_resource;  // e.g. "cuda:0->cpu"
};

enum class EventKind {
  kForward, kBackward, kSendActivation, kSendGradient, kOptimizer, kGradNorm,
  kLoadWeights,     // a streamed layer's weights into the GPU window
  kWeightGradients, // a streamed layer's gradients out to RAM
  kGradientSum      // a stage's gradients summed over the replicas
};

struct SimEvent {
  EventKind kind;
  int stage;        // the stage that runs it, or for a transfer the stage that sends
  int micro_batch;  // -1 for the optimizer, and for a streamed stage's layer over all micro-batches
  std::string resource;
  double start;
  double end;
  int layer = -1;   // a streamed stage's events: which of its layers (0 = its first)
};

struct SimResult {
  double step_seconds = 0.0;      // until the last optimizer step ends
  double optimizer_phase_seconds = 0.0;  // the gradient norm and the optimizer steps after the pipeline
  double pipeline_seconds = 0.0;  // until the last backward ends
  double tokens_per_s = 0.0;
  double bubble_fraction = 0.0;   // 1 - Σ stage compute / (S * pipeline_seconds)
  std::map<std::string, double> utilisation;  // busy / step_seconds, per resource
  std::string bottleneck;         // the busiest resource
  std::vector<SimEvent> events;   // in start order
};

// transfers has num_stages - 1 entries. Throws std::invalid_argument on mismatched sizes.
SimResult simulate(const Schedule& schedule, const std::vector<StageTiming>& stages,
                   const std::vector<TransferTiming>& transfers, int64_t tokens_per_step);

// simulate, then, when some CPU stage has an alone_ratio other than 1, again with each such stage's
// op times charged between alone and beside neighbours by the share o of its compute time during
// which another CPU stage (another resource) computes in the first replay: times x (o + (1 - o) x
// alone_ratio). A stage with lanes always has neighbours (its other lanes). `cpu_stage[s]`: stage s
// computes on CPU cores. The timings it replayed are returned in `replayed`.
SimResult simulate_with_neighbours(const Schedule& schedule, const std::vector<StageTiming>& stages,
                                   const std::vector<TransferTiming>& transfers, int64_t tokens_per_step,
                                   const std::vector<bool>& cpu_stage, std::vector<StageTiming>* replayed = nullptr);

std::string event_kind_name(EventKind kind);

}  // namespace pipetrain
