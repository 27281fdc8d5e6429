#include <sys/stat.h>

#include <cxxopts.hpp>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <string>
#include <vector>

#include "memory/errors.h"
#include "memory/machine_probe.h"
#include "memory/param_count.h"
#include "runtime/cli/cli_util.h"
#include "runtime/io/checkpoint.h"
#include "runtime/cli/commands.h"
#include "runtime/config/run_config.h"
#include "runtime/backends/registry.h"
#include "runtime/config/hardware_file.h"
#include "runtime/tools/hardware_probe.h"
#include "runtime/train/pipeline_trainer.h"
#include "runtime/tools/plan_report.h"
#include "runtime/io/signals.h"
#include "runtime/io/trace.h"
#include "runtime/io/atomic_file.h"
#include "runtime/io/metrics.h"
#include "runtime/backends/cpu/threads.h"
#include "runtime/train/trainer.h"
#include "scheduler/remedies.h"

namespace pipetrain::cli {
namespace {

std::string default_out_dir() {
  char stamp[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", std::localtime(&now));
  return std::string("runs/") + stamp;
}

// mkdir -p; InputError naming the directory when it cannot be made.
void make_dirs(const std::string& path) {
  std::string partial;
  for (size_t i = 0; i <= path.size(); ++i) {
    if (i == path.size() || path[i] == '/') {
      if (!partial.empty() && ::mkdir(partial.c_str(), 0755) != 0 && errno != EEXIST) {
        throw InputError("cannot create output directory '" + partial + "': " + std::strerror(errno));
      }
    }
    if (i < path.size()) partial += path[i];
  }
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0 || !S_ISDIR(info.st_mode)) {
    throw InputError("output path '" + path + "' is not a directory");
  }
}

// The whole model as one stage on the CPU: what a config without a stage map trains.
StageMap single_cpu_stage(const ModelConfig& model) {
  return StageMap{{StageSpec{"cpu", 0, model.num_model_layers() - 1, 0}}};
}

std::string ms(double seconds) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.2f ms", seconds * 1e3);
  return text;
}

// The memory guard stops a run whose resident memory passes this fraction of the CPU budget.
constexpr double kMemoryWatermark = 0.95;

bool exists(const std::string& path) {
  struct stat info {};
  return ::stat(path.c_str(), &info) == 0;
}

}  // namespace

int train_command(int argc, char** argv) {
  cxxopts::Options options("pipetrain train",
                           "Trains a model through a pipeline of stages (a stage map, or --auto), or on one CPU stage "
                           "when none is given. The plan is checked against the memory budgets before anything is "
                           "allocated. With no --config it trains the default config (configs/default.yaml) on the "
                           "licence texts every Debian system ships.");
  options.add_options()
      ("c,config", "YAML config with sections model, train, data, hardware, stages", cxxopts::value<std::string>())
      ("stage-map", "YAML stage map file; overrides the config's stages", cxxopts::value<std::string>())
      ("auto", "let the planner choose the stage boundaries, schedule, checkpointing and core split")
      ("vram-cap-gib", kVramCapHelp, cxxopts::value<double>())
      ("hardware", "hardware preset or YAML file for the plan's budgets (default: the config's)", cxxopts::value<std::string>())
      ("gpu-stages-on-cpu", "run stages placed on cuda:N on the CPU when this build or machine has no such GPU (warns)")
      ("steps", "optimizer steps (overrides train.steps)", cxxopts::value<int64_t>())
      ("o,out", "output directory for metrics.jsonl and config.yaml (default: runs/<date-time>)",
       cxxopts::value<std::string>())
      ("trace", "write a Chrome trace-event JSON timeline (Perfetto) of every step to this file", cxxopts::value<std::string>())
      ("set", "override one config key, e.g. --set train.lr=1e-3, or --set stages=none for one stage (repeatable)",
       cxxopts::value<std::vector<std::string>>())
      ("resume", "continue the run in this directory from its newest valid checkpoint (its config.yaml; --set, "
                 "--steps, --stage-map and --auto still apply)", cxxopts::value<std::string>())
      ("overwrite", "allow --out to name a directory that already holds a run")
      ("print-config", "print the resolved config (with the stage map that would run) and exit")
      ("h,help", "show this help");
  const auto parsed = parse_command(options, argc, argv, "train");
  if (!parsed) return 0;
  StopSignals::install();  // from here a signal stops the run at the next step boundary, with a checkpoint
  const cxxopts::ParseResult& args = *parsed;
  std::vector<std::string> after;
  if (args.count("steps")) after.push_back("train.steps=" + std::to_string(args["steps"].as<int64_t>()));
  const std::optional<std::string> resume_dir =
      args.count("resume") ? std::optional<std::string>(args["resume"].as<std::string>()) : std::nullopt;
  std::optional<CheckpointInfo> resume_from;
  if (resume_dir) {
    if (args.count("config") || args.count("out")) {
      throw InputError("--resume continues a run with its own config.yaml and directory; drop --config and --out");
    }
    resume_from = newest_checkpoint(*resume_dir);  // verified before anything else happens
  }
  RunConfig run = resume_dir ? load_run_config(*resume_dir + "/config.yaml", [&] {
    std::vector<std::string> overrides;
    if (args.count("set")) overrides = args["set"].as<std::vector<std::string>>();
    overrides.insert(overrides.end(), after.begin(), after.end());
    return overrides;
  }())
                             : config_from_args(args, {}, after);

  // The stage map: --stage-map, --auto, the config's, or the whole model as one CPU stage.
  const bool automatic = args.count("auto") > 0;
  if (automatic && args.count("stage-map")) throw InputError("give either --auto or --stage-map, not both");
  std::vector<std::string> warnings;
  PlanRequest request =
      plan_request_for(run, with_vram_cap(load_hardware(args.count("hardware") ? args["hardware"].as<std::string>() : run.hardware), args));
  if (automatic) {
    // The planner chooses where and how, never what is computed: the global batch stays the config's.
    request.choices.micro_batch_counts = {request.options.micro_batches};
    request.choices.shapes = runnable_shapes(request.hardware);
  } else {
    StageMap map = args.count("stage-map") ? load_stage_map_file(args["stage-map"].as<std::string>(), run.model)
                                           : (run.stages.stages.empty() ? single_cpu_stage(run.model) : run.stages);
    map = place_stages(map, args.count("gpu-stages-on-cpu") > 0, &warnings);
    validate_stage_map(map, run.model, request.hardware);
    request.map = map;
  }
  const PlanOutcome outcome = run_plan(request);
  if (!outcome.fits) {
    std::fprintf(stderr, "%s", format_plan_text(request, outcome, suggest_remedies(request, outcome)).c_str());
    throw InputError("the plan does not fit hardware '" + request.hardware.name +
                     "' (above: need against budget per device, and what would fit); nothing was allocated");
  }
  const Plan& plan = outcome.plans.front();
  run.stages = plan.map;
  run.train.schedule = plan.options.schedule;
  run.train.checkpointing = plan.options.checkpointing;
  if (args.count("print-config")) {
    std::printf("%s", to_yaml(run).c_str());
    return 0;
  }

  const std::string out_dir = resume_dir ? *resume_dir : args.count("out") ? args["out"].as<std::string>() : default_out_dir();
  const std::string metrics_path = out_dir + "/metrics.jsonl";
  if (!resume_dir && exists(metrics_path) && !args.count("overwrite")) {
    throw InputError("'" + out_dir + "' already holds a run (" + metrics_path +
                     "); choose another --out, or pass --overwrite to replace it");
  }

  // Everything that can be refused is checked before the output directory is touched.
  if (resume_from && resume_from->step >= run.train.steps) {
    std::printf("nothing to do: %s is at step %lld of %lld (raise --steps to train on)\n", resume_from->path.c_str(),
                static_cast<long long>(resume_from->step), static_cast<long long>(run.train.steps));
    return 0;
  }
  PipelineTrainer trainer(run, request.hardware, args.count("trace") > 0);
  if (resume_from) trainer.resume_from(*resume_from);
  make_dirs(out_dir);
  write_file_atomically(out_dir + "/config.yaml", "# resolved config of this run (" + run.source + ")\n" + to_yaml(run));
  MetricsWriter metrics(metrics_path, resume_from ? std::optional<int64_t>(resume_from->step) : std::nullopt);

  for (const std::string& w : warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  std::printf("pipetrain train: %s, %lld parameters, %lld layers, %s\n", run.source.c_str(),
              static_cast<long long>(total_param_count(run.model)), static_cast<long long>(run.model.num_layers),
              dtype_name(run.model.dtype).c_str());
  std::printf("data: %lld bytes in %zu file(s), %lld training and %lld validation windows of %lld tokens\n",
              static_cast<long long>(trainer.corpus().total_bytes()), run.data.files.size(),
              static_cast<long long>(trainer.corpus().num_train_windows()),
              static_cast<long long>(trainer.corpus().num_val_windows()), static_cast<long long>(run.model.seq_len));
  std::printf("pipeline: %d stage%s, %s, %lld micro-batches of %lld%s%s\n", trainer.num_stages(),
              trainer.num_stages() == 1 ? "" : "s", schedule_kind_name(run.train.schedule).c_str(),
              static_cast<long long>(run.train.micro_batches), static_cast<long long>(run.train.micro_batch_size),
              run.train.checkpointing ? ", activation checkpointing" : "", automatic ? " (chosen by --auto)" : "");
  for (int s = 0; s < trainer.num_stages(); ++s) {
    const StageSpec& st = run.stages.stages[static_cast<size_t>(s)];
    const StageMemory& mem = plan.memory.stages[static_cast<size_t>(s)];
    std::printf("  stage %d: %-20s on %-7s %s planned\n", s, describe_range(run.model, st.first, st.last).c_str(),
                st.device.c_str(),
                format_gib(mem.weights + mem.grads + mem.optimizer + mem.activations + mem.buffers).c_str());
  }
  std::printf("cores: %s\n", describe_cores(trainer.cores()).c_str());
  std::printf("plan times: %s\n", time_source(run.model, request.hardware, plan.options).c_str());
  for (const DeviceMemory& d : plan.memory.devices) {
    if (d.need_bytes > 0) {
      std::printf("memory: %s needs %s of %s budget (hardware '%s')\n", d.name.c_str(), format_gib(d.need_bytes).c_str(),
                  format_gib(d.budget_bytes).c_str(), request.hardware.name.c_str());
    }
  }
  std::printf("metrics: %s\n", metrics_path.c_str());
  if (resume_from) {
    std::printf("resumed from %s (step %lld of %lld)\n", resume_from->path.c_str(),
                static_cast<long long>(resume_from->step), static_cast<long long>(run.train.steps));
  }
  std::fflush(stdout);

  ProgressLine progress(stderr, run.train.steps, run.train.log_interval);
  RunSummary summary;
  const int64_t cpu_budget = request.hardware.device("cpu").usable_bytes();
  // The memory guard's verdict: which budget was passed (cpu: resident memory; cuda:N: what the
  // caching allocator holds), by how much, and the budget.
  std::string memory_stop_device;
  int64_t memory_stop_bytes = 0, memory_stop_budget = 0;
  const auto save = [&] { return trainer.save_checkpoint(out_dir, run.train.keep_checkpoints); };
  try {
    summary = run_training(
        trainer,
        [&](const StepRecord& record) {
          metrics.write(record);
          progress.update(record);
          if (run.train.checkpoint_interval > 0 && record.step % run.train.checkpoint_interval == 0 &&
              record.step < run.train.steps) {
            save();
          }
        },
        [&] {
          if (StopSignals::requested()) return true;
          // The memory guard: past the watermark of the CPU budget, stop at this step boundary with a
          // checkpoint rather than be killed by the OS mid-step.
          const int64_t rss = current_rss_bytes();
          if (rss > static_cast<int64_t>(kMemoryWatermark * static_cast<double>(cpu_budget))) {
            memory_stop_device = "cpu";
            memory_stop_bytes = rss;
            memory_stop_budget = cpu_budget;
            return true;
          }
          for (const VramLine& v : trainer.vram()) {  // and each GPU's caching allocator
            const int64_t budget = request.hardware.device(v.device).usable_bytes();
            if (v.report.reserved_bytes > static_cast<int64_t>(kMemoryWatermark * static_cast<double>(budget))) {
              memory_stop_device = v.device;
              memory_stop_bytes = v.report.reserved_bytes;
              memory_stop_budget = budget;
              return true;
            }
          }
          return false;
        });
  } catch (...) {
    progress.finish();
    if (args.count("trace")) write_chrome_trace(args["trace"].as<std::string>(), {{"measured", trainer.trace_events()}});
    throw;
  }
  progress.finish();
  const std::string checkpoint = save();
  if (summary.stopped && memory_stop_bytes > 0) {
    int64_t need = 0;
    for (const DeviceMemory& d : plan.memory.devices) {
      if (d.name == memory_stop_device) need = d.need_bytes;
    }
    std::fprintf(stderr,
                 "error: %s %s passed %.0f%% of the %s budget (%s of hardware '%s') after step %lld; "
                 "stopped with checkpoint %s before %s. The plan needed %s: something outside it "
                 "grows, or the budget is too tight (resume with: pipetrain train --resume %s)\n",
                 memory_stop_device == "cpu" ? "resident memory" : "GPU memory held by the caching allocator,",
                 format_gib(memory_stop_bytes).c_str(), 100.0 * kMemoryWatermark, memory_stop_device.c_str(),
                 format_gib(memory_stop_budget).c_str(), request.hardware.name.c_str(),
                 static_cast<long long>(summary.steps), checkpoint.c_str(),
                 memory_stop_device == "cpu" ? "the OS kills the run" : "an allocation fails",
                 format_gib(need).c_str(), out_dir.c_str());
    return 1;
  }
  if (summary.stopped) {
    std::printf("stopped by signal %d after step %lld; checkpoint %s\nresume with: pipetrain train --resume %s\n",
                StopSignals::signal_number(), static_cast<long long>(summary.steps), checkpoint.c_str(), out_dir.c_str());
    return StopSignals::exit_status();
  }
  std::printf("checkpoint: %s\n", checkpoint.c_str());

  const double drop = 100.0 * (summary.initial_val_loss - summary.final_val_loss) / summary.initial_val_loss;
  std::printf("done: %lld steps in %.1f s, median %.0f tokens/s; validation loss %.4f -> %.4f (%.1f%% lower)\n",
              static_cast<long long>(summary.steps), summary.seconds, summary.median_tokens_per_s,
              summary.initial_val_loss, summary.final_val_loss, drop);
  const PipelineSummary pipe = trainer.summary();
  if (pipe.steps_measured > 0) {
    std::printf("pipeline (median of %d steps): bubble %.3f measured, %.3f predicted by the simulator from the measured "
                "op times; forward+backward span %s measured, %s predicted\n",
                pipe.steps_measured, pipe.measured_bubble, pipe.predicted_bubble,
                ms(pipe.measured_pipeline_seconds).c_str(), ms(pipe.predicted_pipeline_seconds).c_str());
    for (int s = 0; s < trainer.num_stages(); ++s) {
      const StageTiming& t = pipe.op_times.stages[static_cast<size_t>(s)];
      std::printf("  stage %d on %-7s forward %s, backward %s, optimizer %s; busy %.0f%% of the span%s\n", s,
                  t.resource.c_str(), ms(t.forward_seconds).c_str(), ms(t.backward_seconds).c_str(),
                  ms(t.optimizer_seconds).c_str(), 100.0 * pipe.stage_busy[static_cast<size_t>(s)],
                  run.stages.stages[static_cast<size_t>(s)].device == "cpu" ? "" : " (timed with CUDA events)");
    }
    std::printf("  the planner predicted %.0f tokens/s from %s\n", plan.predicted.tokens_per_s,
                time_source(run.model, request.hardware, plan.options).c_str());
  }
  for (const VramLine& v : trainer.vram()) {
    int64_t planned = 0;
    for (const DeviceMemory& d : plan.memory.devices) {
      if (d.name == v.device) planned = d.need_bytes;
    }
    std::printf("vram: %s peak %s allocated, %s reserved by the caching allocator; the plan estimated %s; cap %s (card %s)\n",
                v.device.c_str(), format_gib(v.report.peak_allocated_bytes).c_str(),
                format_gib(v.report.peak_reserved_bytes).c_str(), format_gib(planned).c_str(),
                v.report.cap_bytes > 0 ? format_gib(v.report.cap_bytes).c_str() : "none",
                format_gib(v.report.total_bytes).c_str());
  }
  if (trainer.pinned_bytes() > 0) {
    std::printf("staging rings: %.2f MiB pinned\n", static_cast<double>(trainer.pinned_bytes()) / (1024.0 * 1024.0));
  }
  if (args.count("trace")) {
    const std::string trace_path = args["trace"].as<std::string>();
    const int64_t tokens = run.train.micro_batch_size * run.train.micro_batches * run.model.seq_len;
    const SimResult predicted = simulate(trainer.schedule(), pipe.op_times.stages, pipe.op_times.transfers, tokens);
    write_chrome_trace(trace_path, {{"measured", trainer.trace_events()},
                                    {"predicted: one step, simulated from the median op times", predicted.events}});
    std::printf("trace written to %s (open it in https://ui.perfetto.dev)\n", trace_path.c_str());
  }
  std::printf("metrics written to %s\n", metrics_path.c_str());
  return 0;
}

}  // namespace pipetrain::cli
