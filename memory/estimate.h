// The memory every stage needs, computed before anything is allocated.
//
// Per stage s of S (tokens = micro_batch_size * seq_len):
//   weights      params * dtype bytes
//   gradients    params * dtype bytes
//   optimizer    params * state bytes (AdamW 8, SGD with momentum 4, SGD 0: FP32 state)
//   activations  without checkpointing: in_flight * tokens * Σ saved + tokens * max transient
//                                       + max per-layer transient (a weight-gradient temporary)
//                with checkpointing:    in_flight * tokens * Σ layer inputs
//                                       + tokens * max over layers (saved + transient)
//                                       + max per-layer transient,
//                the second term being the one layer being recomputed in a backward
//                in_flight: GPipe M, 1F1B min(M, S - s)
//   buffers      on the host side of each cross-device boundary, pinned slots of the boundary
//                activation: ring_slots for what the CPU stage sends (a slot is free once its copy
//                lands) + in_flight + 1 for what it receives (it keeps that slot until the
//                micro-batch's backward); pinned memory is its own budget too
//   slack        the device's allocator_slack fraction of the above
// A device's need = its reserved bytes + Σ its stages; it fits when need <= memory * safety_margin.
// All arithmetic is overflow-checked: an absurd config is an InputError, never a wrapped number.
//
//   MemoryEstimate e = estimate_memory(describe_model(cfg), hw, map, options);
//   if (!e.fits) std::cout << format_memory_table(e, cfg, hw, map);
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "memory/hardware.h"
#include "memory/layer_prefix.h"
#include "memory/model_desc.h"
#include "memory/plan_options.h"
#include "memory/stage_map.h"

namespace pipetrain {

struct StageMemory {
  int in_flight = 0;
  int64_t weights = 0;
  int64_t grads = 0;
  int64_t optimizer = 0;
  int64_t activations = 0;
  int64_t buffers = 0;  // pinned
  int64_t slack = 0;
  int64_t total = 0;
};

struct DeviceMemory {
  std::string name;
  int64_t memory_bytes = 0;
  double safety_margin = 1.0;
  int64_t budget_bytes = 0;  // memory * safety margin
  int64_t reserved_bytes = 0;
  int64_t need_bytes = 0;    // reserved + Σ stages on it
  bool fits = false;
};

struct MemoryEstimate {
  std::vector<StageMemory> stages;
  std::vector<DeviceMemory> devices;  // every device of the hardware, in its order
  int64_t pinned_need_bytes = 0;
  int64_t pinned_budget_bytes = 0;
  bool fits = false;  // every device and the pinned budget
};

// Assumes a validated stage map.
MemoryEstimate estimate_memory(const ModelDesc& model, const HardwareSpec& hardware, const StageMap& map,
                               const PlanOptions& options);

// One stage's need: the formula above for a range of layers on `device`, holding `in_flight`
// micro-batches, with pinned rings for `pinned_bytes_per_token` of boundary activations (the sum
// over its cross-device boundaries; 0 for a GPU stage). estimate_memory and the planner share it.
StageMemory estimate_stage(const RangeCosts& range, const ModelConfig& model, const DeviceSpec& device, int in_flight,
                           int64_t pinned_bytes_per_token, const PlanOptions& options);

// Σ boundary bytes per token that stage s exchanges with neighbours on a device of another kind,
// counted when stage s is on the CPU (the host side holds the pinned rings).
int64_t pinned_bytes_per_token(const LayerPrefix& prefix, const HardwareSpec& hardware, const StageMap& map, int s);

// Component rows, stage columns, then device totals against budgets; GiB with two decimals.
std::string format_memory_table(const MemoryEstimate& estimate, const ModelConfig& model,
                                const HardwareSpec& hardware, const StageMap& map);

// a * b and a + b that throw InputError (naming `what`) instead of overflowing.
int64_t checked_mul(int64_t a, int64_t b, const char* what);
int64_t checked_add(int64_t a, int64_t b, const char* what);

}  // namespace pipetrain
