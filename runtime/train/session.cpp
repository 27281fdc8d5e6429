#include "runtime/train/session.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "memory/errors.h"
#include "memory/machine_probe.h"
#include "memory/param_count.h"
#include "memory/units.h"
#include "runtime/backends/registry.h"
#include "runtime/io/atomic_file.h"
#include "runtime/io/metrics.h"
#include "runtime/io/plan_report.h"
#include "runtime/io/run_dir.h"
#include "runtime/io/signals.h"
#include "runtime/io/trace.h"
#include "runtime/io/weights_file.h"
#include "runtime/train/pipeline_trainer.h"
#include "runtime/train/resume.h"
#include "runtime/train/run_plan.h"

namespace pipetrain {
namespace {

// The memory guard stops a run whose resident memory passes this fraction of the CPU budget.
constexpr double kMemoryWatermark = 0.95;

std::string ms(double seconds) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.2f ms", seconds * 1e3);
  return text;
}

// The plan the run executes: the planner's choice with --auto, else the given or configured stage
// map on the devices this build has. A plan that does not fit is refused with the planner's table
// and remedies, before anything is allocated.
Plan plan_the_run(const TrainRequest& request, std::vector<std::string>& warnings) {
  const RunConfig& run = request.run;
  PlanRequest planning = plan_request_for(run, request.hardware);
  if (request.automatic) {
    // The planner chooses where and how, never what is computed: the global batch stays the config's.
    // With --gpu-stages-on-cpu it chooses as for the hardware's GPU (missing here), and the choice
    // runs with that GPU's stages on the CPU (below).
    planning.choices.micro_batch_counts = {planning.options.micro_batches};
    planning.choices.shapes = request.gpu_stages_on_cpu ? default_shapes(planning.hardware) : runnable_shapes(planning.hardware);
  } else {
    StageMap map = request.stage_map ? *request.stage_map
                                     : (run.stages.stages.empty() ? single_cpu_stage(run.model) : run.stages);
    map = place_stages(map, request.gpu_stages_on_cpu, &warnings);
    validate_stage_map(map, run.model, planning.hardware);
    planning.map = map;
  }
  PlanOutcome outcome = run_plan(planning);
  if (outcome.fits && request.automatic && request.gpu_stages_on_cpu) {
    // The choice with its GPU stages placed on the CPU (a streamed one on the GPU's stand-in),
    // planned again as placed, with the options it was chosen with.
    const StageMap placed = place_stages(outcome.plans.front().map, true, &warnings);
    if (!(placed == outcome.plans.front().map)) {
      planning.options = outcome.plans.front().options;
      planning.map = placed;
      outcome = run_plan(planning);
    }
  }
  if (!outcome.fits) {
    std::fprintf(stderr, "%s", format_plan_text(planning, outcome, suggest_remedies(planning, outcome)).c_str());
    throw InputError("the plan does not fit hardware '" + planning.hardware.name +
                     "' (above: need against budget per device, and what would fit); nothing was allocated");
  }
  return outcome.plans.front();
}

void check_run_dir(const TrainRequest& request) {
  const std::string metrics_path = request.run_dir + "/metrics.jsonl";
  if (!request.resume && path_exists(metrics_path) && !request.overwrite) {
    throw InputError("'" + request.run_dir + "' already holds a run (" + metrics_path +
                     "); choose another --out, or pass --overwrite to replace it");
  }
}

// A run keeps the tokenizer it trains with: its SentencePiece model is copied into the run
// directory as tokenizer.model, and the run's config (config.yaml, every checkpoint) names that
// copy, so generate, export and resume read the same pieces whatever happens to the original (or
// to the cache an "auto:N" model was trained into).
void keep_tokenizer(TrainRequest& request) {
  RunConfig& run = request.run;
  if (run.data.tokenizer.empty()) return;
  const Tokenizer tokenizer = corpus_tokenizer(run.data.tokenizer, run.data.files);
  make_dirs(request.run_dir);
  char* resolved = ::realpath(request.run_dir.c_str(), nullptr);
  if (resolved == nullptr) throw InputError("cannot resolve the run directory '" + request.run_dir + "'");
  const std::string dir = resolved;
  std::free(resolved);
  const auto contents = [](const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  const std::string bytes = contents(tokenizer.path());
  if (fnv1a(bytes.data(), bytes.size()) != tokenizer.fingerprint()) {
    throw InputError("cannot read data.tokenizer '" + tokenizer.path() + "' whole to keep it in the run");
  }
  // tokenizer.model, unless the run already holds another model by that name (a resume that
  // changes the tokenizer: its checkpoints still need the old one), which is never overwritten.
  const auto holds = [&](const std::string& path) { return path_exists(path) && contents(path) == bytes; };
  std::string copy = dir + "/tokenizer.model";
  if (path_exists(copy) && !holds(copy)) copy = dir + "/tokenizer-" + hex16(tokenizer.fingerprint()) + ".model";
  if (!holds(copy)) write_file_atomically(copy, bytes);
  run.data.tokenizer = copy;
}

void print_run_header(const TrainRequest& request, PipelineTrainer& trainer, const std::vector<std::string>& warnings) {
  const RunConfig& run = trainer.config();
  const Plan& plan = trainer.plan();
  for (const std::string& w : warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  std::printf("pipetrain train: %s, %lld parameters, %lld layers, %s\n", run.source.c_str(),
              static_cast<long long>(total_param_count(run.model)), static_cast<long long>(run.model.num_layers),
              dtype_name(run.model.dtype).c_str());
  if (request.init_from) std::printf("weights: from %s (optimizer state fresh)\n", request.init_from->c_str());
  const Corpus& corpus = trainer.corpus();
  std::printf("data: %lld bytes in %zu file(s)", static_cast<long long>(corpus.total_bytes()), run.data.files.size());
  if (!run.data.tokenizer.empty()) {
    std::printf(" = %lld tokens of %s (%.3f per byte)", static_cast<long long>(corpus.total_tokens()), corpus.tokenizer().c_str(),
                static_cast<double>(corpus.total_tokens()) / static_cast<double>(corpus.total_bytes()));
  }
  std::printf(", %lld training and %lld validation windows of %lld tokens\n", static_cast<long long>(corpus.num_train_windows()),
              static_cast<long long>(corpus.num_val_windows()), static_cast<long long>(run.model.seq_len));
  std::printf("pipeline: %d stage%s, %s, %lld micro-batches of %lld%s%s\n", trainer.num_stages(),
              trainer.num_stages() == 1 ? "" : "s", plan.options.schedule.name().c_str(),
              static_cast<long long>(plan.options.micro_batches), static_cast<long long>(plan.options.micro_batch_size),
              plan.options.checkpointing ? ", activation checkpointing" : "", request.automatic ? " (chosen by --auto)" : "");
  for (int s = 0; s < trainer.num_stages(); ++s) {
    const StageSpec& st = plan.map.stages[static_cast<size_t>(s)];
    const StageMemory& mem = plan.memory.stages[static_cast<size_t>(s)];
    // The dtype and the optimizer's home where they are not the run's plain default.
    std::string how;
    if (mem.compute != run.model.dtype) how += ", computes in " + dtype_name(mem.compute);
    if (st.placement().optimizer != st.device) how += ", optimizer on " + st.placement().optimizer.name();
    if (plan.map.num_hosts() > 1) how += ", host " + std::to_string(st.host);
    std::printf("  stage %d: %-20s on %-7s %s planned%s\n", s, describe_range(run.model, st.first, st.last).c_str(),
                st.device.name().c_str(), format_gib(mem.total).c_str(), how.c_str());
  }
  if (run.train.replicas > 1) {
    std::printf("replicas: %lld copies of this pipeline, one process per host each; global batch %lld x %lld x %lld = %lld windows per step; "
                "learning rate as configured (not scaled)\n",
                static_cast<long long>(run.train.replicas), static_cast<long long>(run.train.replicas),
                static_cast<long long>(plan.options.micro_batches), static_cast<long long>(plan.options.micro_batch_size),
                static_cast<long long>(run.train.replicas * plan.options.micro_batches * plan.options.micro_batch_size));
  }
  std::printf("cores: %s\n", describe_cores(trainer.cores()).c_str());
  std::printf("plan times: %s\n", time_source(run.model, request.hardware, plan.options).c_str());
  for (const DeviceMemory& d : plan.memory.devices) {
    if (d.need_bytes > 0) {
      const bool shared = d.id.is_cpu() && request.world.local_size > 1;
      std::printf("memory: %s needs %s of %s budget (hardware '%s'%s)\n", d.name().c_str(), format_gib(d.need_bytes).c_str(),
                  format_gib(d.budget_bytes).c_str(), request.hardware.name.c_str(),
                  shared ? (", its RAM shared by " + std::to_string(request.world.local_size) + " ranks on this host").c_str() : "");
    }
  }
  std::printf("metrics: %s/metrics.jsonl\n", request.run_dir.c_str());
  if (request.resume) {
    std::printf("resumed from %s (step %lld of %lld)\n", request.resume->path.c_str(),
                static_cast<long long>(request.resume->step), static_cast<long long>(run.train.steps));
  }
  std::fflush(stdout);
}

// Which budget the memory guard saw passed: the CPU's (resident memory) or a GPU's (what its
// caching allocator holds), by how much, and the budget.
struct MemoryStop {
  std::optional<DeviceId> device;
  int64_t bytes = 0;
  int64_t budget = 0;
};

// Asked at every step boundary: past the watermark of a device's budget, stop with a checkpoint
// rather than be killed by the OS (or fail an allocation) mid-step.
bool memory_guard_stops(const PipelineTrainer& trainer, const HardwareSpec& hardware, MemoryStop& stop) {
  const int64_t cpu_budget = hardware.cpu().usable_bytes();
  const int64_t rss = current_rss_bytes();
  if (rss > static_cast<int64_t>(kMemoryWatermark * static_cast<double>(cpu_budget))) {
    stop = {DeviceId::cpu(), rss, cpu_budget};
    return true;
  }
  for (const VramLine& v : trainer.vram()) {
    const int64_t budget = hardware.device(v.device).usable_bytes();
    if (v.report.reserved_bytes > static_cast<int64_t>(kMemoryWatermark * static_cast<double>(budget))) {
      stop = {v.device, v.report.reserved_bytes, budget};
      return true;
    }
  }
  return false;
}

// Trains to the configured step count, writing metrics and the progress line every step and a
// checkpoint every checkpoint_interval; stops early on a signal or the memory guard.
// With several processes only rank 0 writes (the replicas hold the same state), and a stop is taken
// by every rank at the same step boundary.
RunSummary train_steps(const TrainRequest& request, PipelineTrainer& trainer, MemoryStop& memory_stop, World* world) {
  const RunConfig& run = trainer.config();
  const bool writes = world == nullptr || world->rank() == 0;
  // Replica 0's hosts take part in its checkpoints (host 0 writes them; the replicas hold the same).
  const bool saves = world == nullptr || world->rank() < trainer.plan().map.num_hosts();
  std::optional<MetricsWriter> metrics;
  if (writes) {
    metrics.emplace(request.run_dir + "/metrics.jsonl", request.resume ? std::optional<int64_t>(request.resume->step) : std::nullopt);
  }
  ProgressLine progress(stderr, run.train.steps, run.train.log_interval);
  const auto stop_here = [&] {
    const bool stop = StopSignals::requested() || memory_guard_stops(trainer, request.hardware, memory_stop);
    return world ? world->all().any(stop) : stop;
  };
  try {
    const RunSummary summary = run_training(
        trainer,
        [&](const StepRecord& record) {
          if (writes) {
            metrics->write(record);
            progress.update(record);
          }
          if (saves && run.train.checkpoint_interval > 0 && record.step % run.train.checkpoint_interval == 0 &&
              record.step < run.train.steps) {
            if (run.train.background_checkpoints) {
              trainer.save_checkpoint_in_background(request.run_dir, run.train.keep_checkpoints);
            } else {
              trainer.save_checkpoint(request.run_dir, run.train.keep_checkpoints);
            }
          }
        },
        stop_here);
    progress.finish();
    return summary;
  } catch (...) {
    progress.finish();
    if (request.trace_path && writes) write_chrome_trace(*request.trace_path, {{"measured", trainer.trace_events()}});
    throw;
  }
}

void report_memory_stop(const TrainRequest& request, const Plan& plan, const RunSummary& summary, const MemoryStop& stop,
                        const std::string& checkpoint) {
  int64_t need = 0;
  for (const DeviceMemory& d : plan.memory.devices) {
    if (d.id == *stop.device) need = d.need_bytes;
  }
  const bool cpu = stop.device->is_cpu();
  std::fprintf(stderr,
               "error: %s %s passed %.0f%% of the %s budget (%s of hardware '%s') after step %lld; "
               "stopped with checkpoint %s before %s. The plan needed %s: something outside it "
               "grows, or the budget is too tight (resume with: pipetrain train --resume %s)\n",
               cpu ? "resident memory" : "GPU memory held by the caching allocator,", format_gib(stop.bytes).c_str(),
               100.0 * kMemoryWatermark, stop.device->name().c_str(), format_gib(stop.budget).c_str(),
               request.hardware.name.c_str(), static_cast<long long>(summary.steps), checkpoint.c_str(),
               cpu ? "the OS kills the run" : "an allocation fails", format_gib(need).c_str(), request.run_dir.c_str());
}

// Measured against predicted: the bubble and span the simulator gives for the measured op times,
// each stage's op times, the planner's tokens/s, the GPUs' allocator peaks, the trace.
void print_run_summary(const TrainRequest& request, const PipelineTrainer& trainer, const RunSummary& summary) {
  const RunConfig& run = trainer.config();
  const Plan& plan = trainer.plan();
  const double drop = 100.0 * (summary.initial_val_loss - summary.final_val_loss) / summary.initial_val_loss;
  // Subword losses are per token; per byte of text they compare with a byte-level run's.
  const Corpus& corpus = trainer.corpus();
  std::string per_byte;
  if (!run.data.tokenizer.empty() && corpus.total_bytes() > 0) {
    char text[64];
    std::snprintf(text, sizeof(text), "; %.4f per byte of text",
                  summary.final_val_loss * static_cast<double>(corpus.total_tokens()) / static_cast<double>(corpus.total_bytes()));
    per_byte = text;
  }
  std::printf("done: %lld steps in %.1f s, median %.0f tokens/s; validation loss %.4f -> %.4f (%.1f%% lower%s)\n",
              static_cast<long long>(summary.steps), summary.seconds, summary.median_tokens_per_s,
              summary.initial_val_loss, summary.final_val_loss, drop, per_byte.c_str());
  const PipelineSummary pipe = trainer.summary();
  if (pipe.steps_measured > 0) {
    std::printf("pipeline (median of %d steps): bubble %.3f measured, %.3f predicted by the simulator from the measured "
                "op times; forward+backward span %s measured, %s predicted\n",
                pipe.steps_measured, pipe.measured_bubble, pipe.predicted_bubble,
                ms(pipe.measured_pipeline_seconds).c_str(), ms(pipe.predicted_pipeline_seconds).c_str());
    for (int s = 0; s < trainer.num_stages(); ++s) {
      const StageTiming& t = pipe.op_times.stages[static_cast<size_t>(s)];
      if (const int host = plan.map.stages[static_cast<size_t>(s)].host; host != 0) {
        std::printf("  stage %d on %-7s computed by host %d (its times are not gathered here)\n", s, t.resource.c_str(), host);
        continue;
      }
      std::printf("  stage %d on %-7s forward %s, backward %s, optimizer %s; busy %.0f%% of the span%s\n", s,
                  t.resource.c_str(), ms(t.forward_seconds).c_str(), ms(t.backward_seconds).c_str(),
                  ms(t.optimizer_seconds).c_str(), 100.0 * pipe.stage_busy[static_cast<size_t>(s)],
                  plan.map.stages[static_cast<size_t>(s)].device.kind == DeviceKind::kCuda ? " (timed with CUDA events)" : "");
    }
  }
  // Every run: what it measured beside what the plan promised, from what.
  const double predicted = plan.predicted.tokens_per_s;  // over every replica, their gradient sums charged
  std::printf("tokens/s: %.0f measured (median), %.0f predicted by the plan from %s%s; measured / predicted %.2f\n",
              summary.median_tokens_per_s, predicted, time_source(run.model, request.hardware, plan.options).c_str(),
              network_note(request.hardware, plan).c_str(), predicted > 0 ? summary.median_tokens_per_s / predicted : 0.0);
  for (const VramLine& v : trainer.vram()) {
    int64_t planned = 0;
    for (const DeviceMemory& d : plan.memory.devices) {
      if (d.id == v.device) planned = d.need_bytes;
    }
    std::printf("vram: %s peak %s allocated, %s reserved by the caching allocator; the plan estimated %s; cap %s (card %s)\n",
                v.device.name().c_str(), format_gib(v.report.peak_allocated_bytes).c_str(),
                format_gib(v.report.peak_reserved_bytes).c_str(), format_gib(planned).c_str(),
                v.report.cap_bytes > 0 ? format_gib(v.report.cap_bytes).c_str() : "none",
                format_gib(v.report.total_bytes).c_str());
  }
  if (trainer.pinned_bytes() > 0) {
    std::printf("staging rings: %.2f MiB pinned\n", static_cast<double>(trainer.pinned_bytes()) / (1024.0 * 1024.0));
  }
  if (const PipelineTrainer::StagedCopies copies = trainer.staged_copies(); copies.total > 0) {
    std::printf("copies into a device, last step: %d of %d written into their staging slot by the sending op%s\n",
                copies.by_op, copies.total,
                copies.by_op < copies.total ? " (no slot was free for the rest: the transfer copied them there)" : "");
  }
  if (request.trace_path) {
    const SimResult predicted = simulate(plan.schedule, pipe.op_times.stages, pipe.op_times.transfers,
                                         tokens_per_step(run.model, plan.options));
    write_chrome_trace(*request.trace_path, {{"measured", trainer.trace_events()},
                                             {"predicted: one step, simulated from the median op times", predicted.events}});
    std::printf("trace written to %s (open it in https://ui.perfetto.dev)\n", request.trace_path->c_str());
  }
  std::printf("metrics written to %s/metrics.jsonl\n", request.run_dir.c_str());
}

// The processes the plan asks for against those started: one per host of the stage map in each of
// train.replicas copies of the pipeline.
void check_world(const TrainRequest& request, const Plan& plan) {
  const int64_t replicas = request.run.train.replicas, hosts = plan.map.num_hosts();
  const int64_t needed = replicas * hosts;
  if (request.world.size == needed) return;
  const std::string what = std::to_string(hosts) + " host(s) in the stage map x train.replicas " + std::to_string(replicas) + " = " +
                           std::to_string(needed) + " processes";
  if (!request.world.distributed()) {
    throw InputError("this run needs " + what + ": start them with scripts/launch_local.sh " + std::to_string(needed) +
                     " pipetrain train ..., or set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT in each, as torchrun does");
  }
  throw InputError(request.world.describe() + ": WORLD_SIZE=" + std::to_string(request.world.size) + " but this run needs " + what +
                   " (rank = replica x hosts + host; the global batch is replicas x micro_batches x micro_batch_size)");
}

// This process's groups: its replica's hosts (the pipeline), its host in every replica, and replica
// 0's hosts for checkpoints. Every rank makes them in this order.
struct WorldGroups {
  std::unique_ptr<Group> pipeline, saves, replicas;
  ProcessGroups groups;
};
WorldGroups make_groups(World& world, const Plan& plan, int64_t replicas) {
  WorldGroups out;
  const int hosts = plan.map.num_hosts();
  const int host = world.rank() % hosts, replica = world.rank() / hosts;
  out.groups.host = host;
  if (hosts > 1) {
    std::vector<int> ranks;
    for (int h = 0; h < hosts; ++h) ranks.push_back(replica * hosts + h);
    out.pipeline = replicas == 1 ? nullptr : world.group(ranks, "pipeline" + std::to_string(replica));
    out.groups.pipeline = out.pipeline ? out.pipeline.get() : &world.all();
    // Checkpoints have a group of their own: a background save exchanges while the step's
    // activations do, and c10d pairs point-to-point messages within a group by tag.
    if (replica == 0) {
      out.saves = world.group(ranks, "saves");
      out.groups.saves = out.saves.get();
    }
  }
  if (replicas > 1) {
    std::vector<int> ranks;
    for (int r = 0; r < replicas; ++r) ranks.push_back(r * hosts + host);
    out.replicas = hosts == 1 ? nullptr : world.group(ranks, "replicas" + std::to_string(host));
    out.groups.replicas = out.replicas ? out.replicas.get() : &world.all();
  }
  return out;
}

// A rank other than 0: the same steps and stops, nothing written (rank 0 writes what they share).
int train_as_other_rank(const TrainRequest& request, PipelineTrainer& trainer, World& world) {
  MemoryStop memory_stop;
  const RunSummary summary = train_steps(request, trainer, memory_stop, &world);
  // Replica 0's other hosts send host 0 their layers for the final checkpoint.
  if (world.rank() < trainer.plan().map.num_hosts()) trainer.save_checkpoint(request.run_dir, request.run.train.keep_checkpoints);
  if (summary.stopped && memory_stop.device) {
    std::fprintf(stderr, "error: %s: %s passed %.0f%% of its budget after step %lld (rank 0 keeps the checkpoint)\n",
                 world.spec().describe().c_str(), memory_stop.device->name().c_str(), 100.0 * kMemoryWatermark,
                 static_cast<long long>(summary.steps));
    return 1;
  }
  if (summary.stopped) return StopSignals::requested() ? StopSignals::exit_status() : 1;
  std::printf("%s: done, %lld steps, median %.0f tokens/s (all processes)\n", world.spec().describe().c_str(),
              static_cast<long long>(summary.steps), summary.median_tokens_per_s);
  return 0;
}

}  // namespace

int run_training_session(const TrainRequest& given) {
  // GPU stages run on the CPU: a streamed one on the GPU's stand-in, which the hardware then lists
  // with the GPU's budget (registry.h place_stages).
  TrainRequest request = given;
  if (request.gpu_stages_on_cpu) request.hardware = request.hardware.with_stand_ins();
  if (request.world.local_size > 1) {
    // The ranks on this host share its RAM: each plans with its share of the budget.
    for (DeviceSpec& d : request.hardware.devices) {
      if (d.id.is_cpu()) d.memory_bytes /= request.world.local_size;
    }
  }
  std::string schedule_note;
  if (request.resume) request.run = continue_schedule(*request.resume, request.run, schedule_note);
  std::vector<std::string> warnings;
  const Plan plan = plan_the_run(request, warnings);
  if (request.print_config) {
    std::printf("%s", to_yaml(recorded_config(request.run, plan)).c_str());
    return 0;
  }
  check_world(request, plan);
  // The other ranks, joined and agreeing on what they run, before anything is allocated.
  const std::unique_ptr<World> world = request.world.distributed() ? World::connect(request.world) : nullptr;
  WorldGroups groups;
  const bool writes = world == nullptr || world->rank() == 0;
  if (world) {
    world->agree("config and plan", to_yaml(recorded_config(request.run, plan)) + "resume step " +
                                        (request.resume ? std::to_string(request.resume->step) : "none"));
  }
  // Everything that can be refused is checked before the output directory is touched; with
  // several ranks, a refusal on one stops all.
  std::string refusal;
  try {
    if (writes) check_run_dir(request);
  } catch (const InputError& e) {
    refusal = e.what();
  }
  if (world && world->all().any(!refusal.empty()) && refusal.empty()) {
    throw InputError(request.world.describe() + ": another rank refused the run (its error says why)");
  }
  if (!refusal.empty()) throw InputError(refusal);
  if (world) groups = make_groups(*world, plan, request.run.train.replicas);
  if (request.resume && request.resume->step >= request.run.train.steps) {
    std::printf("nothing to do: %s is at step %lld of %lld (raise --steps to train on)\n", request.resume->path.c_str(),
                static_cast<long long>(request.resume->step), static_cast<long long>(request.run.train.steps));
    return 0;
  }
  if (writes) keep_tokenizer(request);
  PipelineTrainer trainer(request.run, plan, request.hardware, request.trace_path.has_value() && writes, groups.groups);
  if (world) world->agree("training data (corpus fingerprint)", hex16(trainer.corpus().fingerprint()));
  if (request.resume) {
    check_resume(*request.resume, request.run, trainer.corpus(), request.allowed_changes);
    trainer.resume_from(*request.resume);
  }
  if (!schedule_note.empty()) warnings.push_back(schedule_note);
  if (request.init_from) init_from_weights(*request.init_from, request.run.model, trainer);  // checked whole first
  const RunConfig& run = trainer.config();
  if (!writes) return train_as_other_rank(request, trainer, *world);
  make_dirs(request.run_dir);
  write_file_atomically(request.run_dir + "/config.yaml", "# resolved config of this run (" + run.source + ")\n" + to_yaml(run));
  const int64_t step_windows = request.run.train.micro_batch_size * request.run.train.micro_batches;
  if (trainer.corpus().num_train_windows() < step_windows) {
    warnings.push_back("the corpus holds " + std::to_string(trainer.corpus().num_train_windows()) +
                       " training windows, fewer than one step takes (" + std::to_string(step_windows) +
                       "): every step repeats windows; add text, or lower train.micro_batches or train.micro_batch_size");
  }
  print_run_header(request, trainer, warnings);

  MemoryStop memory_stop;
  const RunSummary summary = train_steps(request, trainer, memory_stop, world.get());
  const std::string checkpoint = trainer.save_checkpoint(request.run_dir, run.train.keep_checkpoints);
  if (summary.stopped && memory_stop.device) {
    report_memory_stop(request, plan, summary, memory_stop, checkpoint);
    return 1;
  }
  if (summary.stopped && !StopSignals::requested()) {
    std::printf("stopped after step %lld with the other ranks (one was signalled or hit its memory guard); checkpoint "
                "%s\nresume with the same command and --resume %s\n",
                static_cast<long long>(summary.steps), checkpoint.c_str(), request.run_dir.c_str());
    return 1;
  }
  if (summary.stopped) {
    std::printf("stopped by signal %d after step %lld; checkpoint %s\nresume with: pipetrain train --resume %s\n",
                StopSignals::signal_number(), static_cast<long long>(summary.steps), checkpoint.c_str(),
                request.run_dir.c_str());
    return StopSignals::exit_status();
  }
  std::printf("checkpoint: %s\n", checkpoint.c_str());
  print_run_summary(request, trainer, summary);
  return 0;
}

}  // namespace pipetrain
