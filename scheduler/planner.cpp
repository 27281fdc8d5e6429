#include "scheduler/planner.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <queue>

#include "memory/errors.h"
#include "memory/layer_prefix.h"
#include "scheduler/cost_model.h"
#include "scheduler/schedule.h"

namespace pipetrain {

Plan evaluate_plan(const ModelDesc& model, const HardwareSpec& hw, const StageMap& map, const PlanOptions& options) {
  const LayerPrefix prefix(model);
  Plan plan{map, options, estimate_memory(model, hw, map, options), {}};
  const int64_t tokens = options.micro_batch_size * model.config.seq_len * options.micro_batches;
  plan.predicted = simulate(make_schedule(options.schedule, map.num_stages(), options.micro_batches),
                            stage_timings(prefix, model.config, hw, map, options),
                            transfer_timings(prefix, model.config, hw, map, options), tokens);
  return plan;
}

std::vector<std::vector<std::string>> default_shapes(const HardwareSpec& hw) {
  std::vector<std::vector<std::string>> shapes = {{"cpu"}, {"cpu", "cpu"}};
  if (const DeviceSpec* gpu = hw.first_gpu()) {
    shapes.push_back({gpu->name});
    shapes.push_back({"cpu", gpu->name});
    shapes.push_back({gpu->name, "cpu"});
    shapes.push_back({"cpu", gpu->name, "cpu"});
  }
  return shapes;
}

// Giving CPU stages their own cores: every split of all the CPU's cores among them, plus sharing.
// (Leaving cores idle never helps: a stage's rate grows with its cores.)
std::vector<std::vector<int>> core_splits(const std::vector<std::string>& shape, const HardwareSpec& hw, bool choose) {
  std::vector<int> cpu_stages;
  for (size_t s = 0; s < shape.size(); ++s) {
    if (hw.device(shape[s]).kind == DeviceKind::kCpu) cpu_stages.push_back(static_cast<int>(s));
  }
  std::vector<std::vector<int>> splits = {std::vector<int>(shape.size(), 0)};
  if (!choose || cpu_stages.size() < 2) return splits;
  const int cores = hw.device("cpu").cores;
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

namespace {

constexpr size_t kMaxAutoStages = 8;
constexpr size_t kFirstPassCandidates = 64;

struct Candidate {
  double lower_bound;  // seconds per micro-batch, a bound on step_seconds / micro_batches
  uint16_t shape;
  uint16_t split;
  uint8_t schedule;
  uint8_t checkpointing;
  int32_t micro_batches;
  std::array<int32_t, kMaxAutoStages> last;  // last layer of each stage
  bool operator<(const Candidate& other) const { return lower_bound < other.lower_bound; }
};

// Per shape, what does not depend on the boundaries: devices, resources per core split, links.
struct ShapeInfo {
  std::vector<std::string> devices;
  std::vector<const DeviceSpec*> specs;
  std::vector<std::vector<int>> splits;
  std::vector<std::vector<int>> resource;  // [split][stage] -> resource id
  std::vector<int> forward_link, backward_link;  // [boundary] -> resource id, -1 = free hand-off
  std::vector<const LinkSpec*> forward_spec, backward_spec;
  int num_resources = 0;
};

ShapeInfo describe_shape(const std::vector<std::string>& shape, const HardwareSpec& hw, bool choose_cores) {
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
  for (const std::string& d : shape) info.specs.push_back(&hw.device(d));
  info.splits = core_splits(shape, hw, choose_cores);
  for (const auto& split : info.splits) {
    std::vector<int> ids;
    for (size_t s = 0; s < shape.size(); ++s) {
      ids.push_back(id(stage_resource(StageSpec{shape[s], 0, 0, split[s]}, static_cast<int>(s), hw)));
    }
    info.resource.push_back(ids);
  }
  for (size_t s = 0; s + 1 < shape.size(); ++s) {
    const bool both_cpu = info.specs[s]->kind == DeviceKind::kCpu && info.specs[s + 1]->kind == DeviceKind::kCpu;
    const LinkSpec* f = both_cpu || shape[s] == shape[s + 1] ? nullptr : hw.link(shape[s], shape[s + 1]);
    const LinkSpec* b = both_cpu || shape[s] == shape[s + 1] ? nullptr : hw.link(shape[s + 1], shape[s]);
    info.forward_spec.push_back(f);
    info.backward_spec.push_back(b);
    info.forward_link.push_back(f ? id(shape[s] + "->" + shape[s + 1]) : -1);
    info.backward_link.push_back(b ? id(shape[s + 1] + "->" + shape[s]) : -1);
  }
  info.num_resources = static_cast<int>(names.size());
  return info;
}

}  // namespace

PlannerResult plan_auto(const ModelDesc& model, const HardwareSpec& hw, const PlanOptions& base,
                        const PlannerChoices& choices) {
  const ModelConfig& cfg = model.config;
  const LayerPrefix prefix(model);
  const int64_t n = prefix.num_layers();
  const auto shapes = choices.shapes.empty() ? default_shapes(hw) : choices.shapes;
  const auto schedules = choices.schedules.empty() ? std::vector<ScheduleKind>{ScheduleKind::kGPipe, ScheduleKind::kOneFOneB}
                                                   : choices.schedules;
  const auto counts = choices.micro_batch_counts.empty() ? std::vector<int>{1, 2, 4, 8, 16, 32} : choices.micro_batch_counts;
  const auto checkpointing = choices.checkpointing.empty() ? std::vector<bool>{false, true} : choices.checkpointing;
  const double tokens = static_cast<double>(base.micro_batch_size * cfg.seq_len);
  const StageTimer timer(cfg, hw, base);

  std::vector<ShapeInfo> infos;
  for (const auto& shape : shapes) {
    if (shape.empty() || shape.size() > kMaxAutoStages) {
      throw InputError("the planner chooses among 1 to " + std::to_string(kMaxAutoStages) + " stages; a shape has " +
                       std::to_string(shape.size()));
    }
    for (const std::string& device : shape) hw.device(device);  // InputError for an unknown device
    infos.push_back(describe_shape(shape, hw, choices.choose_cores));
  }

  // Calls visit(candidate) for every candidate that fits every budget.
  PlannerResult result;
  auto enumerate = [&](const std::function<void(const Candidate&)>& visit) {
    result.candidates = 0;
    result.feasible = 0;
    for (size_t shape_index = 0; shape_index < infos.size(); ++shape_index) {
      const ShapeInfo& info = infos[shape_index];
      const int num_stages = static_cast<int>(info.devices.size());
      if (num_stages > n) continue;
      std::array<int32_t, kMaxAutoStages> last{};
      std::array<RangeCosts, kMaxAutoStages> ranges{};
      std::vector<double> work(static_cast<size_t>(info.num_resources));
      std::function<void(int, int64_t)> cut = [&](int s, int64_t first) {
        if (s < num_stages - 1) {
          for (int64_t end = first; end <= n - (num_stages - s); ++end) {
            last[static_cast<size_t>(s)] = static_cast<int32_t>(end);
            ranges[static_cast<size_t>(s)] = prefix.range(first, end);
            cut(s + 1, end + 1);
          }
          return;
        }
        last[static_cast<size_t>(s)] = static_cast<int32_t>(n - 1);
        ranges[static_cast<size_t>(s)] = prefix.range(first, n - 1);
        // Transfers depend only on the boundaries.
        double transfer_trip = 0.0;
        std::vector<double> link_work(static_cast<size_t>(info.num_resources), 0.0);
        for (int b = 0; b + 1 < num_stages; ++b) {
          const double bytes = static_cast<double>(ranges[static_cast<size_t>(b)].output_bytes_per_token) * tokens;
          if (const LinkSpec* l = info.forward_spec[static_cast<size_t>(b)]) {
            const double t = bytes / l->bytes_per_s + l->latency_s;
            transfer_trip += t;
            link_work[static_cast<size_t>(info.forward_link[static_cast<size_t>(b)])] += t;
          }
          if (const LinkSpec* l = info.backward_spec[static_cast<size_t>(b)]) {
            const double t = bytes / l->bytes_per_s + l->latency_s;
            transfer_trip += t;
            link_work[static_cast<size_t>(info.backward_link[static_cast<size_t>(b)])] += t;
          }
        }
        for (bool ckpt : checkpointing) {
          // Which (schedule, M) fit: memory does not depend on the core split.
          std::vector<std::pair<ScheduleKind, int>> fitting;
          for (ScheduleKind kind : schedules) {
            for (int m : counts) {
              result.candidates += static_cast<int64_t>(info.splits.size());
              PlanOptions po = base;
              po.schedule = kind;
              po.micro_batches = m;
              po.checkpointing = ckpt;
              std::array<int64_t, 16> need{};
              for (size_t d = 0; d < hw.devices.size() && d < need.size(); ++d) need[d] = hw.devices[d].reserved_bytes;
              int64_t pinned = 0;
              for (int st = 0; st < num_stages; ++st) {
                const DeviceSpec& dev = *info.specs[static_cast<size_t>(st)];
                int64_t pinned_per_token = 0;
                if (dev.kind == DeviceKind::kCpu) {
                  if (st > 0 && info.specs[static_cast<size_t>(st - 1)]->kind != DeviceKind::kCpu) {
                    pinned_per_token += ranges[static_cast<size_t>(st)].input_bytes_per_token;
                  }
                  if (st + 1 < num_stages && info.specs[static_cast<size_t>(st + 1)]->kind != DeviceKind::kCpu) {
                    pinned_per_token += ranges[static_cast<size_t>(st)].output_bytes_per_token;
                  }
                }
                const StageMemory mem = estimate_stage(ranges[static_cast<size_t>(st)], cfg, dev,
                                                       activations_in_flight(kind, num_stages, st, m), pinned_per_token, po);
                pinned += mem.buffers;
                for (size_t d = 0; d < hw.devices.size() && d < need.size(); ++d) {
                  if (&hw.devices[d] == &dev) need[d] += mem.total;
                }
              }
              bool fits = pinned <= hw.pinned_bytes;
              for (size_t d = 0; d < hw.devices.size() && d < need.size() && fits; ++d) {
                fits = need[d] <= hw.devices[d].usable_bytes();
              }
              if (fits) fitting.emplace_back(kind, m);
            }
          }
          if (fitting.empty()) continue;
          for (size_t split = 0; split < info.splits.size(); ++split) {
            // Work per micro-batch on each resource, and one micro-batch's round trip.
            std::fill(work.begin(), work.end(), 0.0);
            double trip = transfer_trip;
            for (int st = 0; st < num_stages; ++st) {
              const DeviceSpec& dev = *info.specs[static_cast<size_t>(st)];
              const int cores = info.splits[split][static_cast<size_t>(st)];
              const int64_t first = st == 0 ? 0 : last[static_cast<size_t>(st - 1)] + 1;
              const StageTiming t = timer.time(dev.name, cores > 0 ? cores : dev.cores, first,
                                               last[static_cast<size_t>(st)], ckpt);
              const double seconds = t.forward_seconds + t.backward_seconds;
              work[static_cast<size_t>(info.resource[split][static_cast<size_t>(st)])] += seconds;
              trip += seconds;
            }
            double busiest = 0.0;
            for (size_t i = 0; i < work.size(); ++i) busiest = std::max(busiest, work[i] + link_work[i]);
            for (const auto& [kind, m] : fitting) {
              ++result.feasible;
              Candidate c{std::max(busiest, trip / m), static_cast<uint16_t>(shape_index), static_cast<uint16_t>(split),
                          static_cast<uint8_t>(kind), static_cast<uint8_t>(ckpt), m, last};
              visit(c);
            }
          }
        }
      };
      cut(0, 0);
    }
  };

  const size_t keep = static_cast<size_t>(1 + std::max(0, choices.runners_up));
  auto per_token = [](const Plan& p) { return p.predicted.step_seconds / p.options.micro_batches; };
  // Simulates candidates best bound first until no remaining bound can beat the kept plans.
  auto branch_and_bound = [&](std::vector<Candidate> candidates) {
    std::sort(candidates.begin(), candidates.end());
    std::vector<Plan> best;
    for (const Candidate& c : candidates) {
      if (best.size() == keep && c.lower_bound >= per_token(best.back()) * (1.0 - 1e-12)) break;
      const ShapeInfo& info = infos[c.shape];
      PlanOptions po = base;
      po.schedule = static_cast<ScheduleKind>(c.schedule);
      po.micro_batches = c.micro_batches;
      po.checkpointing = c.checkpointing != 0;
      const std::vector<int64_t> last(c.last.begin(), c.last.begin() + static_cast<int64_t>(info.devices.size()));
      best.push_back(evaluate_plan(model, hw, make_stage_map(info.devices, last, info.splits[c.split]), po));
      ++result.simulated;
      // Equal speed: the plan with fewer stages is the simpler one to run.
      std::stable_sort(best.begin(), best.end(), [&](const Plan& a, const Plan& b) {
        const double ta = per_token(a), tb = per_token(b);
        if (std::abs(ta - tb) > 1e-12 * std::max(ta, tb)) return ta < tb;
        return a.map.num_stages() < b.map.num_stages();
      });
      if (best.size() > keep) best.pop_back();
    }
    return best;
  };

  // Pass 1: the candidates with the best bounds give an incumbent. Pass 2: only candidates whose
  // bound beats the incumbent's kept plans can matter; search them exactly.
  std::priority_queue<Candidate> first;  // max-heap on the bound: the worst of the best on top
  enumerate([&](const Candidate& c) {
    if (first.size() < kFirstPassCandidates) {
      first.push(c);
    } else if (c.lower_bound < first.top().lower_bound) {
      first.pop();
      first.push(c);
    }
  });
  std::vector<Candidate> seeds;
  for (; !first.empty(); first.pop()) seeds.push_back(first.top());
  std::vector<Plan> incumbent = branch_and_bound(seeds);
  if (incumbent.size() < keep) {
    result.plans = std::move(incumbent);  // pass 1 held every fitting candidate
    return result;
  }
  const double cutoff = per_token(incumbent.back());
  std::vector<Candidate> contenders;
  // <=, not <: when the incumbent's plans meet their bounds exactly, they must be found again.
  enumerate([&](const Candidate& c) {
    if (c.lower_bound <= cutoff * (1.0 + 1e-12)) contenders.push_back(c);
  });
  result.plans = branch_and_bound(std::move(contenders));
  return result;
}

}  // namespace pipetrain
