#include <cxxopts.hpp>

#include <optional>
#include <string>
#include <vector>

#include "memory/errors.h"
#include "runtime/cli/cli_util.h"
#include "runtime/cli/commands.h"
#include "runtime/config/hardware_file.h"
#include "runtime/config/run_config.h"
#include "runtime/io/checkpoint.h"
#include "runtime/io/run_dir.h"
#include "runtime/io/signals.h"
#include "runtime/train/resume.h"
#include "runtime/train/session.h"

namespace pipetrain::cli {
namespace {

cxxopts::Options train_options() {
  cxxopts::Options options("pipetrain train",
                           "Trains a model through a pipeline of stages (a stage map, or --auto), or on one CPU stage "
                           "when none is given. The plan is checked against the memory budgets before anything is "
                           "allocated. With no --config it trains the default config (configs/default.yaml) on the "
                           "licence texts every Debian system ships.");
  options.add_options()
      ("c,config", "YAML config with sections model, train, data, hardware, stages", cxxopts::value<std::string>())
      ("stage-map", "YAML stage map file; overrides the config's stages (each stage: device, layers, and optionally "
                    "cores, lanes, weights, optimizer, host: README.md, config reference)", cxxopts::value<std::string>())
      ("auto", "let the planner choose the stage boundaries, schedule, checkpointing and core split")
      ("vram-cap-gib", kVramCapHelp, cxxopts::value<double>())
      ("rescale-profile", kRescaleProfileHelp)
      ("hardware", "hardware preset or YAML file for the plan's budgets (default: the config's)", cxxopts::value<std::string>())
      ("gpu-stages-on-cpu", "run stages placed on cuda:N on the CPU when this build or machine has no such GPU (warns; a "
                            "streamed one on standin:N, the GPU's stand-in); with --auto: plan for the hardware's GPU and "
                            "run that choice so")
      ("steps", "optimizer steps (overrides train.steps)", cxxopts::value<int64_t>())
      ("o,out", "output directory for metrics.jsonl and config.yaml (default: runs/<date-time>)",
       cxxopts::value<std::string>())
      ("trace", "write a Chrome trace-event JSON timeline (Perfetto) of every step to this file", cxxopts::value<std::string>())
      ("set", "override one config key, e.g. --set train.lr=1e-3, or --set stages=none for one stage (repeatable)",
       cxxopts::value<std::vector<std::string>>())
      ("resume", "continue the run in this directory from its newest valid checkpoint (its config.yaml; --set, "
                 "--steps, --stage-map and --auto still apply)", cxxopts::value<std::string>())
      ("allow-changes", "with --resume: continue although these changed since the checkpoint (comma list of model, "
                        "data, tokenizer, seed; each is refused, naming the values, without it)",
       cxxopts::value<std::string>())
      ("init-from", "start from the weights in this safetensors file (`pipetrain export` writes them; names, shapes and "
                    "dtypes must match the model); the optimizer starts fresh", cxxopts::value<std::string>())
      ("overwrite", "allow --out to name a directory that already holds a run")
      ("dist-timeout-s", "with several processes (a stage map's host: N, or train.replicas; RANK, WORLD_SIZE, "
                         "MASTER_ADDR, MASTER_PORT as torchrun sets them, or PIPETRAIN_STORE_FILE; "
                         "scripts/launch_local.sh starts them on one machine): how long a rank waits for the others at the rendezvous and in each "
                         "exchange before it exits with an error (torch.distributed's default; an exchange may wait "
                         "for another rank's whole step or checkpoint save)", cxxopts::value<double>()->default_value("1800"))
      ("print-config", "print the resolved config (with the stage map that would run) and exit")
      ("h,help", "show this help");
  return options;
}

// The config: --resume's run directory's own, or --config's (the default config without one), with
// --set and --steps applied.
RunConfig resolved_config(const cxxopts::ParseResult& args, const std::optional<std::string>& resume_dir) {
  std::vector<std::string> after;
  if (args.count("steps")) after.push_back("train.steps=" + std::to_string(args["steps"].as<int64_t>()));
  if (!resume_dir) return config_from_args(args, {}, after);
  std::vector<std::string> overrides;
  if (args.count("set")) overrides = args["set"].as<std::vector<std::string>>();
  overrides.insert(overrides.end(), after.begin(), after.end());
  return load_run_config(*resume_dir + "/config.yaml", overrides);
}

}  // namespace

int train_command(int argc, char** argv) {
  cxxopts::Options options = train_options();
  const auto parsed = parse_command(options, argc, argv, "train");
  if (!parsed) return 0;
  StopSignals::install();  // from here a signal stops the run at the next step boundary, with a checkpoint
  const cxxopts::ParseResult& args = *parsed;
  const std::optional<std::string> resume_dir =
      args.count("resume") ? std::optional<std::string>(args["resume"].as<std::string>()) : std::nullopt;
  TrainRequest request;
  request.world = world_from_environment(args["dist-timeout-s"].as<double>());  // a bad variable first: nothing else is read
  if (resume_dir) {
    if (args.count("config") || args.count("out")) {
      throw InputError("--resume continues a run with its own config.yaml and directory; drop --config and --out");
    }
    request.resume = newest_checkpoint(*resume_dir);  // verified before anything else happens
    if (args.count("allow-changes")) request.allowed_changes = parse_allowed_changes(args["allow-changes"].as<std::string>());
  } else if (args.count("allow-changes")) {
    throw InputError("--allow-changes goes with --resume (what a resumed run may change)");
  }
  if (args.count("init-from")) {
    if (resume_dir) throw InputError("--resume continues a run's own weights; --init-from starts a new run: give one of them");
    request.init_from = args["init-from"].as<std::string>();
  }
  request.run = resolved_config(args, resume_dir);
  request.automatic = args.count("auto") > 0;
  if (request.automatic && args.count("stage-map")) throw InputError("give either --auto or --stage-map, not both");
  request.hardware = hardware_from_args(args, request.run.hardware);
  if (args.count("stage-map")) request.stage_map = load_stage_map_file(args["stage-map"].as<std::string>(), request.run.model);
  request.gpu_stages_on_cpu = args.count("gpu-stages-on-cpu") > 0;
  request.run_dir = resume_dir ? *resume_dir : args.count("out") ? args["out"].as<std::string>() : default_run_dir();
  request.overwrite = args.count("overwrite") > 0;
  if (args.count("trace")) request.trace_path = args["trace"].as<std::string>();
  request.print_config = args.count("print-config") > 0;
  return run_training_session(request);
}

}  // namespace pipetrain::cli
