// The memory every stage needs, computed before anything is allocated.
//
// Per stage s of S (tokens = micro_batch_size * seq_len; in_flight = the micro-batches stage s
// holds at once, which the schedule's op lists decide and the caller passes in; c = the dtype its
// device computes in, memory/precision.h), each part counted where it lives:
//   on its device
//   weights      params * c bytes
//   gradients    params * c bytes
//   activations  without checkpointing: in_flight * tokens * Σ saved + tokens * max transient
//                                       + max per-layer transient (a weight-gradient temporary)
//                with checkpointing:    in_flight * tokens * Σ layer inputs
//                                       + tokens * max over layers (saved + transient)
//                                       + max per-layer transient,
//                the second term being the one layer being recomputed in a backward
//   where its optimizer lives (its device, or CPU RAM for a GPU stage with `optimizer: cpu`)
//   master       params * 4 when c is 16-bit or the optimizer lives in RAM (float32 master
//                weights), else 0
//   optimizer    params * state bytes (memory/optimizer_config.h: AdamW 2 moments, SGD with
//                momentum 1, each in the state dtype; SGD 0)
//   a streamed stage (weights in RAM, computing on a GPU; memory/stage_map.h) instead holds on its
//   device only a window of window_layers layers' c-bit weights and two layers' c-bit gradients
//   (one accumulating over the micro-batches, one draining to RAM), its activations as above; in
//   RAM its float32 masters (the weights are converted from them on their way in), the optimizer
//   state, and its gradients, float32 like the masters, until the step (none with layerwise_update: each layer steps as
//   soon as its gradient arrives); pinned, two slots of its largest layer's weights on their way in
//   and two of its gradients on their way out
//   in pinned host memory (its own budget too)
//   buffers      the staging rings of its boundaries with a device of its own memory, on the host
//                side (boundary_rings below); and for a GPU stage whose optimizer lives in RAM, two
//                slots of its largest layer's c-bit gradients (copied out, then refilled with the
//                updated c-bit weights that go back)
//   slack        each device's allocator_slack fraction of what it holds
// A device's need = its reserved bytes + Σ its stages; it fits when need <= memory * safety_margin.
// All arithmetic is overflow-checked: an absurd config is an InputError, never a wrapped number.
//
//   MemoryEstimate e = estimate_memory(describe_model(cfg), hw, map, in_flight, options);
//   if (!e.fits) std::cout << format_memory_table(e, cfg, hw, map);
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "memory/hardware.h"
#include "memory/layer_prefix.h"
#include "memory/memory_options.h"
#include "memory/model_desc.h"
#include "memory/stage_map.h"

namespace pipetrain {

struct StageMemory {
  Dtype compute = Dtype::kFloat32;  // what the stage computes in
  int in_flight = 0;
  int64_t weights = 0;
  int64_t grads = 0;
  int64_t host_grads = 0; // a streamed stage's gradients, in RAM until the optimizer steps
  int64_t master = 0;     // float32 master weights (16-bit compute)
  int64_t optimizer = 0;  // the optimizer's state
  int64_t activations = 0;
  int64_t buffers = 0;  // pinned
  // On its host's CPU: a float32 copy of its gradients that replicas sum (train.replicas > 1), and
  // the boundary tensors that cross to another host (one each way).
  int64_t network = 0;
  int64_t slack = 0;
  int64_t total = 0;
  // The total, by where it lives (each with its share of the slack).
  int64_t on_device = 0;          // weights, gradients, activations
  int64_t on_optimizer_home = 0;  // master weights and optimizer state, where they are not on the device
  int64_t on_host_pinned = 0;     // buffers, where the stage is not on the CPU
  int64_t on_host = 0;            // network, on its host's CPU
};

struct DeviceMemory {
  DeviceId id;
  int host = 0;              // with stages on several hosts, each host's devices are its own
  bool several_hosts = false;
  int64_t memory_bytes = 0;
  double safety_margin = 1.0;
  int64_t budget_bytes = 0;  // memory * safety margin
  int64_t reserved_bytes = 0;
  int64_t need_bytes = 0;    // reserved + Σ stages on it
  bool fits = false;
  std::string name() const { return several_hosts ? id.name() + "@host" + std::to_string(host) : id.name(); }
};

// The layer list's costs in each dtype the stages compute in, made once per dtype.
class PrefixByDtype {
 public:
  explicit PrefixByDtype(const ModelConfig& model) : model_(model) {}
  const LayerPrefix& operator()(Dtype dtype);

 private:
  ModelConfig model_;
  std::vector<std::pair<Dtype, LayerPrefix>> prefixes_;
};

// The pinned staging rings of the boundary between stage b (which sends activations forward) and
// stage b + 1, as the runtime allocates them. Only a boundary that crosses between host memory and
// a device's own memory has them, held by the stage on the host side:
//   into the device:  ring_slots slots (a slot is free again once its copy lands)
//   out of it:        the receiving host stage's micro-batches in flight + 1 (the host stage keeps
//                     each slot as its tensor until the micro-batch's backward; one more for the
//                     copy arriving meanwhile)
// Each slot holds one micro-batch's boundary activation (its gradient has the same size), in the
// boundary's dtype.
struct BoundaryRings {
  bool staged = false;
  int host_stage = -1;     // whose budget holds the rings
  int64_t slot_bytes = 0;
  int forward_slots = 0;   // activations, stage b -> b + 1
  int backward_slots = 0;  // gradients, stage b + 1 -> b
  int64_t pinned_bytes() const;
};

// The rings of boundary b (0 <= b < S - 1) for stages on `sender` and `receiver` holding
// `sender_in_flight` and `receiver_in_flight` micro-batches, with `slot_bytes` per slot.
BoundaryRings boundary_rings(int b, DeviceId sender, DeviceId receiver, int sender_in_flight, int receiver_in_flight,
                             int64_t slot_bytes, int ring_slots);

// Per boundary of a stage map, the bytes per token that cross it: the sending stage's last layer's
// output, in the boundary's dtype (memory/precision.h boundary_dtype).
std::vector<int64_t> boundary_bytes_per_token(PrefixByDtype& prefixes, const StageMap& map, const Precision& precision);

// Every boundary's rings for a stage map, each slot one micro-batch of boundary_bytes_per_token.
std::vector<BoundaryRings> stage_map_rings(PrefixByDtype& prefixes, const ModelConfig& model, const StageMap& map,
                                           const std::vector<int>& in_flight, const MemoryOptions& options);

// Σ what the stages need per device of the hardware, plus each used device's reserve (the CPU's
// always), and the pinned total: the one fit check, for the estimate and the planner alike.
class DeviceTally {
 public:
  // `hosts` machines of this hardware, each with its own devices and budgets.
  explicit DeviceTally(const HardwareSpec& hardware, int hosts = 1);
  void add(DeviceId device, int64_t bytes, int host = 0);
  void add_pinned(int64_t bytes);
  bool fits() const;
  // Every device of the hardware, in its order (host by host), with its need against its budget.
  std::vector<DeviceMemory> devices() const;
  int64_t pinned_need_bytes() const { return pinned_; }

 private:
  const HardwareSpec& hardware_;
  int hosts_;
  std::vector<int64_t> need_;  // [host * devices + device]
  std::vector<bool> used_;
  int64_t pinned_ = 0;
};

struct MemoryEstimate {
  std::vector<StageMemory> stages;
  std::vector<BoundaryRings> rings;   // per boundary: the staging rings counted in `buffers`
  std::vector<DeviceMemory> devices;  // every device of the hardware, in its order
  int64_t pinned_need_bytes = 0;
  int64_t pinned_budget_bytes = 0;
  bool fits = false;  // every device and the pinned budget
};

// Assumes a validated stage map; in_flight has one entry per stage.
MemoryEstimate estimate_memory(const ModelDesc& model, const HardwareSpec& hardware, const StageMap& map,
                               const std::vector<int>& in_flight, const MemoryOptions& options);

// One stage's need: the formula above for a range of layers (its costs for the dtype the device
// computes in) on `device`, its optimizer on `optimizer_home`, its weights streamed or resident,
// holding `in_flight` micro-batches, with `ring_bytes` of boundary staging rings. estimate_memory
// and the planner share it.
StageMemory estimate_stage(const RangeCosts& range, const ModelConfig& model, const DeviceSpec& device,
                           const DeviceSpec& optimizer_home, bool streamed, int in_flight, int64_t ring_bytes,
                           const MemoryOptions& options, int lanes = 1);

// Adds a stage's memory to the tally: each part on the device that holds it.
void tally_stage(DeviceTally& tally, const StageMemory& memory, DeviceId device, DeviceId optimizer_home, int host = 0);


// Component rows, stage columns, then device totals against budgets; GiB with two decimals.
std::string format_memory_table(const MemoryEstimate& estimate, const ModelConfig& model, const StageMap& map);

// a * b and a + b that throw InputError (naming `what`) instead of overflowing.
int64_t checked_mul(int64_t a, int64_t b, const char* what);
int64_t checked_add(int64_t a, int64_t b, const char* what);

}  // namespace pipetrain
