#include "scheduler/planner.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <limits>
#include <queue>
#include <stdexcept>
#include <tuple>

#include "memory/errors.h"
#include "memory/estimate.h"
#include "memory/layer_prefix.h"
#include "scheduler/cores.h"
#include "scheduler/cost_model.h"
#include "scheduler/schedule.h"
#include "scheduler/splits.h"

namespace pipetrain {

std::vector<Shape> default_shapes(const HardwareSpec& hw) {
  const DeviceId cpu = DeviceId::cpu();
  std::vector<Shape> shapes = {{cpu}, {cpu, cpu}};
  if (const DeviceSpec* gpu = hw.first_gpu()) {
    shapes.push_back({gpu->id});
    shapes.push_back({cpu, gpu->id});
    shapes.push_back({gpu->id, cpu});
    shapes.push_back({cpu, gpu->id, cpu});
  }
  return shapes;
}

Shape parse_shape(const std::vector<std::string>& names) {
  Shape shape;
  for (const std::string& name : names) shape.push_back(parse_device(name));
  return shape;
}

// Giving CPU stages their own cores: every split of all the CPU's cores among them, plus sharing.
// (Leaving cores idle never helps: a stage's rate grows with its cores.)
std::vector<std::vector<int>> core_splits(const Shape& shape, const HardwareSpec& hw, bool choose) {
  std::vector<int> cpu_stages;
  for (size_t s = 0; s < shape.size(); ++s) {
    if (shape[s].is_cpu()) cpu_stages.push_back(static_cast<int>(s));
  }
  std::vector<std::vector<int>> splits = {std::vector<int>(shape.size(), 0)};
  if (!choose || cpu_stages.size() < 2) return splits;
  const int cores = hw.cpu().cores;
  std::vector<int> current(shape.size(), 0);
  std::function<void(size_t, int)> assign = [&](size_t i, int left) {
    if (i + 1 == cpu_stages.size()) {
      current[static_cast<size_t>(cpu_stages[i])] = left;
      splits.push_back(current);
      return;
    }
    const int reserve = static_cast<int>(cpu_stages.size() - i - 1);
    for (int c = 1; c <= left - reserve; ++c) {
      current[static_cast<size_t>(cpu_stages[i])] = c;
      assign(i + 1, left - c);
    }
  };
  if (cores >= static_cast<int>(cpu_stages.size())) assign(0, cores);
  return splits;
}

std::vector<std::vector<int>> lane_splits(const Shape& shape, const std::vector<int>& cores, const HardwareSpec& hw,
                                          bool choose) {
  std::vector<std::vector<int>> out = {std::vector<int>(shape.size(), 1)};
  if (!choose) return out;
  // Offered: one lane per core, for a shape's only CPU stage. (Each lane set is a memory check per
  // cut; every divisor for every CPU stage made 200 layers on 8 cores take 12 s instead of 0.7.)
  int cpu_stages = 0, owned = 0;
  size_t only = 0;
  for (size_t s = 0; s < shape.size(); ++s) {
    if (!shape[s].is_cpu()) continue;
    ++cpu_stages;
    only = s;
    owned += cores[s];
  }
  if (cpu_stages != 1) return out;
  const int n = cores[only] > 0 ? cores[only] : hw.cpu().cores - owned;
  if (n < 2) return out;
  out.push_back(std::vector<int>(shape.size(), 1));
  out.back()[only] = n;
  return out;
}

namespace {

constexpr size_t kMaxAutoStages = 8;
constexpr size_t kFirstPassCandidates = 64;

struct Candidate {
  double lower_bound;  // seconds per micro-batch, a bound on step_seconds / micro_batches
  uint16_t shape;
  uint16_t split;
  uint8_t schedule;    // index into the choices' schedules
  uint8_t checkpointing;
  uint8_t optimizer_in_ram;  // GPU stages' optimizer in CPU RAM
  // 0: GPU stages' weights resident; else streamed from CPU RAM, through a window of at most this
  // many layers (the largest that fits; simulate() picks among the windows up to it).
  uint8_t window;
  int32_t micro_batches;
  std::array<int32_t, kMaxAutoStages> last;  // last layer of each stage
  bool operator<(const Candidate& other) const { return lower_bound < other.lower_bound; }
};

// Per shape, what does not depend on the boundaries: devices, resources per core split, links, and
// the micro-batches each stage holds under each schedule and count (from the op lists).
struct ShapeInfo {
  Shape devices;
  std::vector<const DeviceSpec*> specs;
  std::vector<std::vector<int>> splits;          // [split][stage] -> cores (0: the shared pool)
  std::vector<std::vector<int>> lanes;           // [split][stage] -> lanes
  std::vector<std::vector<int>> lane_sets;       // the distinct lanes vectors, [0] all 1
  std::vector<size_t> lane_set_of;               // [split] -> index into lane_sets
  std::vector<int> groups;                       // the distinct largest lane counts, [0] = 1
  std::vector<std::vector<int>> resource;        // [split][stage] -> resource id
  std::vector<int> forward_link, backward_link;  // [boundary] -> resource id, -1 = free hand-off
  std::vector<const LinkSpec*> forward_spec, backward_spec;
  // [group][schedule][count] -> per stage, for micro-batches moving in groups of groups[group]
  std::vector<std::vector<std::vector<std::vector<int>>>> in_flight;
  size_t group_index(const std::vector<int>& stage_lanes) const {
    const int most = *std::max_element(stage_lanes.begin(), stage_lanes.end());
    return static_cast<size_t>(std::find(groups.begin(), groups.end(), most) - groups.begin());
  }
  std::vector<Dtype> compute;     // per stage: the dtype it computes in
  std::vector<Dtype> boundary;    // per boundary: the dtype that crosses it
  bool has_own_memory_stage = false;  // a GPU stage, whose optimizer may live in RAM
  // Per stage, the resources a streamed GPU stage's weight loads, gradient copies and layer steps
  // occupy (-1 for other stages).
  std::vector<int> load_resource, gradient_resource, step_resource;
  int num_resources = 0;

  // Stage s's placement: GPU stages with their optimizer in RAM, or also their weights (streamed).
  Placement placement(size_t s, bool in_ram, bool streamed) const {
    const bool away = devices[s].has_own_memory();
    const DeviceId cpu = DeviceId::cpu();
    return {devices[s], away && streamed ? cpu : devices[s], away && (in_ram || streamed) ? cpu : devices[s]};
  }
};

// How a candidate keeps GPU stages' state: optimizer on the GPU, optimizer in RAM, or weights
// and optimizer in RAM (streamed).
struct Homes {
  bool in_ram;
  bool streamed;
};

// One way a candidate cut can run: a schedule and micro-batch count, by index, and for a streamed
// home the largest window that fits (0 otherwise).
struct FittingOption {
  int schedule;
  int count;
  int window;
};
using OptionList = std::vector<FittingOption>;

// What bounds a candidate's time per micro-batch from below: the busiest resource's work per
// micro-batch, and one micro-batch's trip forward and back through every stage and link (which M
// micro-batches share: trip / M); then the optimizer phase, which follows the pipeline once per
// step (every stage's share of the norm, then every stage's step, in turn: phase / M).
// Streamed stages add work per step (their weights' visits, gradient copies, layer steps) to
// resources, which M micro-batches share.
// (Fixed arrays: a bound is made per candidate, and allocating made up a tenth of the search.)
constexpr size_t kMaxResources = 4 * kMaxAutoStages + 4;
struct Bound {
  size_t resources = 0;
  std::array<double, kMaxResources> per_micro_batch_work{};  // per resource
  std::array<double, kMaxResources> per_step_work{};         // per resource
  double trip = 0.0;
  double phase = 0.0;
  // Per stage, its ops' writes into the staging rings of copies into a GPU, per micro-batch.
  std::array<double, kMaxAutoStages> staging{};
  double per_micro_batch(int m) const {
    double busiest = trip / m;
    for (size_t r = 0; r < resources; ++r) busiest = std::max(busiest, per_micro_batch_work[r] + per_step_work[r] / m);
    return busiest + phase / m;
  }
};

class AutoPlanner {
 public:
  AutoPlanner(const ModelDesc& model, const HardwareSpec& hw, const PlanOptions& base, const PlannerChoices& choices)
      : model_(model), hw_(hw), base_(base), prefix_(model), timer_(model.config, hw, base),
        tokens_(static_cast<double>(base.micro_batch_size * model.config.seq_len)),
        shapes_(choices.shapes.empty() ? default_shapes(hw) : choices.shapes),
        schedules_(choices.schedules.empty() ? ScheduleKind::all() : choices.schedules),
        counts_(choices.micro_batch_counts.empty() ? std::vector<int>{1, 2, 4, 8, 16, 32} : choices.micro_batch_counts),
        checkpointing_(choices.checkpointing.empty() ? std::vector<bool>{false, true} : choices.checkpointing),
        optimizer_in_ram_(choices.optimizer_in_ram.empty() ? std::vector<bool>{false, true} : choices.optimizer_in_ram),
        streamed_(choices.weights_streamed.empty() ? std::vector<bool>{false, true} : choices.weights_streamed),
        windows_(choices.window_layers.empty() ? std::vector<int>{1, 2, 3, 4} : choices.window_layers),
        keep_(static_cast<size_t>(1 + std::max(0, choices.runners_up))), choose_lanes_(choices.choose_lanes),
        prefixes_(model.config),
        resident_schedules_(schedules_for(false)), streamed_schedules_(schedules_for(true)) {
    for (const Shape& shape : shapes_) infos_.push_back(describe_shape(shape, choices.choose_cores));
  }

  // Pass 1: the candidates with the best bounds give an incumbent. Pass 2: only candidates whose
  // bound beats the incumbent's kept plans can matter; search them exactly.
  PlannerResult run() {
    std::vector<Plan> incumbent = branch_and_bound(best_bounds(kFirstPassCandidates));
    if (incumbent.size() < keep_) {
      result_.plans = std::move(incumbent);  // pass 1 held every fitting candidate
      return result_;
    }
    const double cutoff = per_micro_batch(incumbent.back());
    std::vector<Candidate> contenders;
    // <=, not <: when the incumbent's plans meet their bounds exactly, they must be found again.
    enumerate([&](const Candidate& c) {
      if (c.lower_bound <= cutoff * (1.0 + 1e-12)) contenders.push_back(c);
    });
    result_.plans = branch_and_bound(std::move(contenders));
    return result_;
  }

 private:
  ShapeInfo describe_shape(const Shape& shape, bool choose_cores) const;
  void enumerate(const std::function<void(const Candidate&)>& visit);
  void enumerate_cut(size_t shape_index, const std::vector<int64_t>& last, const std::function<void(const Candidate&)>& visit);
  std::vector<Homes> homes_for(const ShapeInfo& info) const;
  std::vector<size_t> schedules_for(bool streamed) const;
  const std::vector<size_t>& allowed_schedules(bool streamed) const {
    return streamed ? streamed_schedules_ : resident_schedules_;
  }
  OptionList fitting_options(const ShapeInfo& info, const std::vector<RangeCosts>& ranges,
                             const std::vector<int64_t>& boundary_bytes, bool checkpointing, Homes homes,
                             const std::vector<int>& lanes) const;
  Bound bound_of(const ShapeInfo& info, size_t split, const std::vector<int64_t>& last, bool checkpointing, Homes homes,
                 const Bound& transfers) const;
  std::vector<Candidate> best_bounds(size_t count);
  std::vector<Plan> branch_and_bound(std::vector<Candidate> candidates);
  // `cutoff`: the time per micro-batch a plan must beat to be kept (infinity until keep_ are).
  Plan simulate(const Candidate& c, double cutoff) const;

  static double per_micro_batch(const Plan& p) { return p.predicted.step_seconds / p.options.micro_batches; }

  const ModelDesc& model_;
  const HardwareSpec& hw_;
  const PlanOptions& base_;
  const LayerPrefix prefix_;
  const StageTimer timer_;
  const double tokens_;  // per micro-batch
  const std::vector<Shape> shapes_;
  const std::vector<ScheduleKind> schedules_;
  const std::vector<int> counts_;
  const std::vector<bool> checkpointing_;
  const std::vector<bool> optimizer_in_ram_;
  const std::vector<bool> streamed_;
  const std::vector<int> windows_;
  const size_t keep_;
  const bool choose_lanes_;
  PrefixByDtype prefixes_;  // the layer costs in each dtype a stage computes in
  const std::vector<size_t> resident_schedules_, streamed_schedules_;  // schedules_for each
  std::vector<ShapeInfo> infos_;
  PlannerResult result_;
};

ShapeInfo AutoPlanner::describe_shape(const Shape& shape, bool choose_cores) const {
  if (shape.empty() || shape.size() > kMaxAutoStages) {
    throw InputError("the planner chooses among 1 to " + std::to_string(kMaxAutoStages) + " stages; a shape has " +
                     std::to_string(shape.size()));
  }
  ShapeInfo info;
  info.devices = shape;
  std::vector<std::string> names;
  auto id = [&](const std::string& name) {
    for (size_t i = 0; i < names.size(); ++i) {
      if (names[i] == name) return static_cast<int>(i);
    }
    names.push_back(name);
    return static_cast<int>(names.size() - 1);
  };
  for (DeviceId d : shape) info.specs.push_back(&hw_.device(d));  // InputError for an unknown device
  for (const std::vector<int>& cores : core_splits(shape, hw_, choose_cores)) {
    for (const std::vector<int>& lanes : lane_splits(shape, cores, hw_, choose_lanes_)) {
      info.splits.push_back(cores);
      info.lanes.push_back(lanes);
      const auto seen = std::find(info.lane_sets.begin(), info.lane_sets.end(), lanes);
      info.lane_set_of.push_back(static_cast<size_t>(seen - info.lane_sets.begin()));
      if (seen == info.lane_sets.end()) info.lane_sets.push_back(lanes);
      const int most = *std::max_element(lanes.begin(), lanes.end());
      if (std::find(info.groups.begin(), info.groups.end(), most) == info.groups.end()) info.groups.push_back(most);
    }
  }
  for (const auto& split : info.splits) {
    std::vector<int> ids;
    for (size_t s = 0; s < shape.size(); ++s) {
      ids.push_back(id(compute_resource(StageSpec{shape[s], 0, 0, split[s], {}, {}}, static_cast<int>(s))));
    }
    info.resource.push_back(ids);
  }
  for (size_t s = 0; s + 1 < shape.size(); ++s) {
    const LinkSpec* f = copy_link(hw_, shape[s], shape[s + 1]);
    const LinkSpec* b = copy_link(hw_, shape[s + 1], shape[s]);
    info.forward_spec.push_back(f);
    info.backward_spec.push_back(b);
    info.forward_link.push_back(f ? id(link_resource(shape[s], shape[s + 1])) : -1);
    info.backward_link.push_back(b ? id(link_resource(shape[s + 1], shape[s])) : -1);
  }
  for (DeviceId d : shape) {
    const bool gpu = d.has_own_memory();
    info.load_resource.push_back(gpu ? id(link_resource(DeviceId::cpu(), d)) : -1);
    info.gradient_resource.push_back(gpu ? id(link_resource(d, DeviceId::cpu())) : -1);
    info.step_resource.push_back(gpu ? id("optimizer (cpu)") : -1);
  }
  info.num_resources = static_cast<int>(names.size());
  if (names.size() > kMaxResources) throw std::logic_error("planner: a shape with more resources than kMaxResources");
  for (DeviceId d : shape) {
    info.compute.push_back(base_.precision.compute(d));
    info.has_own_memory_stage = info.has_own_memory_stage || d.has_own_memory();
  }
  for (size_t b = 0; b + 1 < shape.size(); ++b) info.boundary.push_back(boundary_dtype(info.compute[b], info.compute[b + 1]));
  for (int group : info.groups) {
    info.in_flight.emplace_back();
    for (ScheduleKind kind : schedules_) {
      info.in_flight.back().emplace_back();
      for (int m : counts_) {
        info.in_flight.back().back().push_back(make_schedule(kind, static_cast<int>(shape.size()), m, group).in_flight());
      }
    }
  }
  return info;
}

// Calls visit(candidate) for every candidate that fits every budget.
void AutoPlanner::enumerate(const std::function<void(const Candidate&)>& visit) {
  result_.candidates = 0;
  result_.feasible = 0;
  for (size_t shape_index = 0; shape_index < infos_.size(); ++shape_index) {
    const int num_stages = static_cast<int>(infos_[shape_index].devices.size());
    for_each_cut(prefix_.num_model_layers(), num_stages, 1,
                 [&](const std::vector<int64_t>& last) { enumerate_cut(shape_index, last, visit); });
  }
}

// One cut of one shape: its transfers, then per checkpointing setting the options that fit, then
// per core split the bound of each.
void AutoPlanner::enumerate_cut(size_t shape_index, const std::vector<int64_t>& last,
                                const std::function<void(const Candidate&)>& visit) {
  const ShapeInfo& info = infos_[shape_index];
  const size_t num_stages = info.devices.size();
  // Each stage's costs in the dtype it computes in; each boundary's bytes in the dtype crossing it.
  std::vector<RangeCosts> ranges;
  std::vector<int64_t> boundary_bytes;
  for (size_t s = 0; s < num_stages; ++s) {
    ranges.push_back(prefixes_(info.compute[s]).range(s == 0 ? kEmbedLayer : last[s - 1] + 1, last[s]));
  }
  for (size_t b = 0; b + 1 < num_stages; ++b) {
    boundary_bytes.push_back(prefixes_(info.boundary[b]).range(last[b], last[b]).output_bytes_per_token);
  }
  // Transfers depend only on the boundaries.
  Bound transfers;
  transfers.resources = static_cast<size_t>(info.num_resources);
  for (size_t b = 0; b + 1 < num_stages; ++b) {
    const double bytes = static_cast<double>(boundary_bytes[b]) * tokens_;
    const DeviceId a = info.devices[b], z = info.devices[b + 1];
    for (const auto& [link, resource, from, to] : {std::tuple{info.forward_spec[b], info.forward_link[b], a, z},
                                                   std::tuple{info.backward_spec[b], info.backward_link[b], z, a}}) {
      if (link == nullptr) continue;
      const double t = boundary_copy_seconds(hw_, from, to, bytes);
      transfers.trip += t;
      transfers.per_micro_batch_work[static_cast<size_t>(resource)] += t;
      transfers.staging[from == a ? b : b + 1] += staging_write_seconds(hw_, from, to, bytes);
    }
  }
  std::array<int32_t, kMaxAutoStages> cut{};
  for (size_t s = 0; s < num_stages; ++s) cut[s] = static_cast<int32_t>(last[s]);
  for (const Homes homes : homes_for(info)) {
    const size_t schedules = allowed_schedules(homes.streamed).size();
    const size_t checkpointing = homes.streamed ? static_cast<size_t>(std::count(checkpointing_.begin(), checkpointing_.end(), true))
                                                : checkpointing_.size();
    result_.candidates += static_cast<int64_t>(checkpointing * schedules * counts_.size() * info.splits.size());
    for (bool ckpt : checkpointing_) {
      if (homes.streamed && !ckpt) continue;  // a streamed stage recomputes its layers in backward
      // Memory depends on the lanes, not on the cores.
      std::vector<OptionList> fitting_by_lanes;
      for (const std::vector<int>& lanes : info.lane_sets) {
        fitting_by_lanes.push_back(fitting_options(info, ranges, boundary_bytes, ckpt, homes, lanes));
      }
      for (size_t split = 0; split < info.splits.size(); ++split) {
        const OptionList& fitting = fitting_by_lanes[info.lane_set_of[split]];
        if (fitting.empty()) continue;
        const Bound bound = bound_of(info, split, last, ckpt, homes, transfers);
        for (const auto& [kind, count, window] : fitting) {
          ++result_.feasible;
          const int m = counts_[static_cast<size_t>(count)];
          visit({bound.per_micro_batch(m), static_cast<uint16_t>(shape_index), static_cast<uint16_t>(split),
                 static_cast<uint8_t>(kind), static_cast<uint8_t>(ckpt), static_cast<uint8_t>(homes.in_ram),
                 static_cast<uint8_t>(window), m, cut});
        }
      }
    }
  }
}

// The homes a shape's GPU stages may have: the optimizer on the GPU or in RAM, or streamed (weights
// and optimizer in RAM); a shape without a GPU stage has only the first.
std::vector<Homes> AutoPlanner::homes_for(const ShapeInfo& info) const {
  std::vector<Homes> out;
  // Weights where they compute: allowed, or the only way for a shape without a GPU stage.
  const bool may_keep = std::find(streamed_.begin(), streamed_.end(), false) != streamed_.end() || !info.has_own_memory_stage;
  for (bool in_ram : optimizer_in_ram_) {
    if (!may_keep || (in_ram && !info.has_own_memory_stage)) continue;  // no GPU stage: nothing to move
    out.push_back({in_ram, false});
  }
  const bool may_stream = std::find(streamed_.begin(), streamed_.end(), true) != streamed_.end();
  if (may_stream && info.has_own_memory_stage) out.push_back({true, true});
  return out;
}

// The schedules (indices into schedules_) a candidate may run: a streamed segment only layer-major;
// resident stages every other (layer-major runs resident stages exactly like GPipe, so it is tried
// for them only when GPipe is not).
std::vector<size_t> AutoPlanner::schedules_for(bool streamed) const {
  const ScheduleKind layer_major = ScheduleKind::named("layer-major");
  const bool has_gpipe = std::find(schedules_.begin(), schedules_.end(), ScheduleKind::named("gpipe")) != schedules_.end();
  std::vector<size_t> out;
  for (size_t k = 0; k < schedules_.size(); ++k) {
    const bool is_layer_major = schedules_[k] == layer_major;
    if (streamed ? is_layer_major : !(is_layer_major && has_gpipe)) out.push_back(k);
  }
  return out;
}

// Which (schedule, micro-batch count) fit every budget for these stage ranges: the estimate's own
// stage formula, rings and device tally; for a streamed home, with the largest window of the
// choices that fits (memory grows with the window, so every smaller one fits too). Memory does not
// depend on the core split.
OptionList AutoPlanner::fitting_options(const ShapeInfo& info, const std::vector<RangeCosts>& ranges,
                                        const std::vector<int64_t>& boundary_bytes, bool checkpointing, Homes homes,
                                        const std::vector<int>& lanes) const {
  const size_t group = info.group_index(lanes);
  const int num_stages = static_cast<int>(info.devices.size());
  const int64_t tokens = base_.micro_batch_size * model_.config.seq_len;
  OptionList fitting;
  PlanOptions po = base_;
  po.checkpointing = checkpointing;
  std::vector<int> windows = {0};  // resident: no window
  if (homes.streamed) {
    windows = windows_;
    std::sort(windows.rbegin(), windows.rend());
  }
  auto at_most = [](const std::vector<int>& a, const std::vector<int>& b) {
    for (size_t i = 0; i < a.size(); ++i) {
      if (a[i] > b[i]) return false;
    }
    return true;
  };
  // Memory depends on the schedule and count only through what each stage holds, and grows with
  // it: holding no more than a set that fits fits, holding at least as much as one that does not
  // does not. Many pairs hold the same or comparable sets (1F1B holds min(M, stages after); GPipe
  // M everywhere), so few are checked, per window.
  std::vector<std::vector<std::pair<const std::vector<int>*, bool>>> checked(windows.size());
  auto fits_with = [&](size_t w, const std::vector<int>& in_flight) {
    const auto seen = std::find_if(checked[w].begin(), checked[w].end(), [&](const auto& c) {
      return c.second ? at_most(in_flight, *c.first) : at_most(*c.first, in_flight);
    });
    if (seen != checked[w].end()) return seen->second;
    if (windows[w] > 0) po.window_layers = windows[w];
    std::vector<int64_t> pinned(static_cast<size_t>(num_stages), 0);
    for (int b = 0; b + 1 < num_stages; ++b) {
      const BoundaryRings rings = boundary_rings(
          b, info.devices[static_cast<size_t>(b)], info.devices[static_cast<size_t>(b + 1)],
          in_flight[static_cast<size_t>(b)], in_flight[static_cast<size_t>(b + 1)],
          checked_mul(tokens, boundary_bytes[static_cast<size_t>(b)], "ring slot bytes"), po.ring_slots);
      if (rings.staged) pinned[static_cast<size_t>(rings.host_stage)] += rings.pinned_bytes();
    }
    DeviceTally tally(hw_);
    for (int s = 0; s < num_stages; ++s) {
      const size_t i = static_cast<size_t>(s);
      const Placement place = info.placement(i, homes.in_ram, homes.streamed);
      const StageMemory mem = estimate_stage(ranges[i], model_.config, *info.specs[i], hw_.device(place.optimizer),
                                             place.streamed(), in_flight[i], pinned[i], po, lanes[i]);
      tally_stage(tally, mem, info.devices[i], place.optimizer);
    }
    checked[w].emplace_back(&in_flight, tally.fits());
    return tally.fits();
  };
  for (size_t kind : allowed_schedules(homes.streamed)) {
    for (size_t count = 0; count < counts_.size(); ++count) {
      const std::vector<int>& in_flight = info.in_flight[group][kind][count];
      // The largest window first; when it does not fit, the smallest: if that does not either, none does.
      size_t w = 0;
      if (!fits_with(0, in_flight)) {
        if (windows.size() == 1 || !fits_with(windows.size() - 1, in_flight)) continue;
        w = 1;
        while (!fits_with(w, in_flight)) ++w;
      }
      fitting.push_back({static_cast<int>(kind), static_cast<int>(count), windows[w]});
    }
  }
  return fitting;
}

// Work per micro-batch on each resource (compute and copy engines), work per step (a streamed
// stage's weights in, twice, its gradients out and its layer steps), and one micro-batch's trip.
Bound AutoPlanner::bound_of(const ShapeInfo& info, size_t split, const std::vector<int64_t>& last, bool checkpointing,
                            Homes homes, const Bound& transfers) const {
  Bound bound = transfers;
  for (size_t st = 0; st < info.devices.size(); ++st) {
    const DeviceSpec& dev = *info.specs[st];
    const int cores = info.splits[split][st];
    const int lanes = info.lanes[split][st];
    const int64_t first = st == 0 ? kEmbedLayer : last[st - 1] + 1;
    const Placement place = info.placement(st, homes.in_ram, homes.streamed);
    const StageTiming t =
        timer_.time(place, (cores > 0 ? cores : dev.cores) / lanes, first, last[st], checkpointing, /*per_layer=*/false);
    // Alone a CPU stage may run faster than its profile's times beside neighbours: the bound takes the faster.
    double seconds = (t.forward_seconds + t.backward_seconds + transfers.staging[st]) * std::min(1.0, t.alone_ratio);
    if (lanes > 1) seconds += static_cast<double>(lanes - 1) * timer_.lane_add_seconds(first, last[st]);
    // A stage with lanes runs `lanes` micro-batches in one op's time.
    bound.per_micro_batch_work[static_cast<size_t>(info.resource[split][st])] += seconds / lanes;
    bound.trip += seconds;
    bound.phase += t.norm_seconds + t.optimizer_seconds;
    if (place.streamed()) {
      const StageTimer::StreamedWork work = timer_.streamed_work(place.compute, first, last[st]);
      bound.per_step_work[static_cast<size_t>(info.load_resource[st])] += 2.0 * work.load_seconds;
      bound.per_step_work[static_cast<size_t>(info.gradient_resource[st])] += work.gradient_seconds;
      bound.per_step_work[static_cast<size_t>(info.step_resource[st])] += work.step_seconds;
    }
  }
  return bound;
}

// The `count` candidates with the smallest bounds.
std::vector<Candidate> AutoPlanner::best_bounds(size_t count) {
  std::priority_queue<Candidate> best;  // max-heap on the bound: the worst of the best on top
  enumerate([&](const Candidate& c) {
    if (best.size() < count) {
      best.push(c);
    } else if (c.lower_bound < best.top().lower_bound) {
      best.pop();
      best.push(c);
    }
  });
  std::vector<Candidate> out;
  for (; !best.empty(); best.pop()) out.push_back(best.top());
  return out;
}

// The candidate's plan; streamed, the best of the windows up to its largest that fits: the
// smallest as fast as the largest (less memory). A deeper window only lets
// loads start earlier, so no window is faster than the largest, and the smaller ones are tried
// only for a plan that will be kept.
Plan AutoPlanner::simulate(const Candidate& c, double cutoff) const {
  const ShapeInfo& info = infos_[c.shape];
  PlanOptions po = base_;
  po.schedule = schedules_[c.schedule];
  po.micro_batches = c.micro_batches;
  po.checkpointing = c.checkpointing != 0;
  const std::vector<int64_t> last(c.last.begin(), c.last.begin() + static_cast<int64_t>(info.devices.size()));
  StageMap map = make_stage_map(info.devices, last, info.splits[c.split], info.lanes[c.split]);
  for (size_t s = 0; s < map.stages.size(); ++s) {
    const Placement place = info.placement(s, c.optimizer_in_ram != 0, c.window != 0);
    if (place.optimizer != place.compute) map.stages[s].optimizer = place.optimizer;
    if (place.weights != place.compute) map.stages[s].weights = place.weights;
  }
  if (c.window == 0) return evaluate_plan(model_, hw_, map, po);
  std::vector<int> windows;
  for (int window : windows_) {
    if (window <= c.window) windows.push_back(window);
  }
  std::sort(windows.begin(), windows.end());
  po.window_layers = windows.back();
  Plan fastest = evaluate_plan(model_, hw_, map, po);
  if (per_micro_batch(fastest) > cutoff * (1.0 + 1e-12)) return fastest;
  for (size_t i = 0; i + 1 < windows.size(); ++i) {
    po.window_layers = windows[i];
    Plan p = evaluate_plan(model_, hw_, map, po);
    // As fast (better_plan's tolerance), in less GPU memory; better_plan itself would call it a tie
    // when another device holds the larger share of its budget.
    if (!(per_micro_batch(fastest) < per_micro_batch(p) * (1.0 - 1e-12))) return p;
  }
  return fastest;
}

// Simulates candidates best bound first until no remaining bound can beat the kept plans.
std::vector<Plan> AutoPlanner::branch_and_bound(std::vector<Candidate> candidates) {
  std::sort(candidates.begin(), candidates.end());
  std::vector<Plan> best;
  for (const Candidate& c : candidates) {
    // A candidate whose bound equals the kept plans' time may tie them and win on memory: simulate it.
    if (best.size() == keep_ && c.lower_bound > per_micro_batch(best.back()) * (1.0 + 1e-12)) break;
    best.push_back(simulate(c, best.size() == keep_ ? per_micro_batch(best.back()) : std::numeric_limits<double>::infinity()));
    ++result_.simulated;
    std::stable_sort(best.begin(), best.end(), better_plan);
    if (best.size() > keep_) best.pop_back();
  }
  return best;
}

}  // namespace

PlannerResult plan_auto(const ModelDesc& model, const HardwareSpec& hardware, const PlanOptions& base,
                        const PlannerChoices& choices) {
  return AutoPlanner(model, hardware, base, choices).run();
}

}  // namespace pipetrain
