#include <cxxopts.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <sstream>

#include "memory/errors.h"
#include "runtime/cli/cli_util.h"
#include "runtime/cli/commands.h"
#include "runtime/config/run_config.h"
#include "runtime/config/hardware_file.h"
#include "runtime/io/plan_report.h"
#include "runtime/train/run_plan.h"

namespace pipetrain::cli {

int plan_command(int argc, char** argv) {
  cxxopts::Options options("pipetrain plan",
                           "Computes what every stage needs on every device before anything is allocated, whether it "
                           "fits, and how fast the split will run; with --auto it chooses the split. Exit status 2 when "
                           "nothing fits, with remedies.");
  options.add_options()
      ("c,config", "YAML config (model, train, hardware, stages); default: the default config", cxxopts::value<std::string>())
      ("vram-cap-gib", kVramCapHelp, cxxopts::value<double>())
      ("rescale-profile", kRescaleProfileHelp)
      ("hardware", "a preset (" + [] {
         std::string names;
         for (const std::string& n : hardware_preset_names()) names += (names.empty() ? "" : ", ") + n;
         return names;
       }() + ") or a hardware YAML file; overrides the config's", cxxopts::value<std::string>())
      ("stage-map", "YAML stage map file; overrides the config's stages", cxxopts::value<std::string>())
      ("auto", "choose the stage boundaries (and whatever is not fixed below) automatically")
      ("shape", "devices of the stages for --auto, e.g. cpu,cuda:0,cpu (default: try CPU-only, GPU-only and CPU/GPU splits)",
       cxxopts::value<std::string>())
      ("schedule", "gpipe or 1f1b (default: the config's; with --auto: chosen)", cxxopts::value<std::string>())
      ("micro-batches", "micro-batches per step (default: the config's; with --auto: chosen)", cxxopts::value<int>())
      ("checkpointing", "on or off (default: the config's; with --auto: chosen)", cxxopts::value<std::string>())
      ("runners-up", "how many runners-up --auto reports", cxxopts::value<int>()->default_value("3"))
      ("set", "override one config key, e.g. --set model.num_layers=24 (repeatable)", cxxopts::value<std::vector<std::string>>())
      ("json", "print the plan as JSON")
      ("h,help", "show this help");
  const auto parsed = parse_command(options, argc, argv, "plan");
  if (!parsed) return 0;
  const cxxopts::ParseResult& args = *parsed;
  const RunConfig run = config_from_args(args);

  PlanRequest request =
      plan_request_for(run, hardware_from_args(args, run.hardware));
  request.choices.runners_up = args["runners-up"].as<int>();
  if (args.count("schedule")) {
    request.options.schedule = ScheduleKind::named(args["schedule"].as<std::string>());
    request.choices.schedules = {request.options.schedule};
  }
  if (args.count("micro-batches")) {
    const int m = args["micro-batches"].as<int>();
    if (m < 1) throw InputError("--micro-batches must be at least 1, got " + std::to_string(m));
    request.options.micro_batches = m;
    request.choices.micro_batch_counts = {m};
  }
  if (args.count("checkpointing")) {
    const std::string value = args["checkpointing"].as<std::string>();
    if (value != "on" && value != "off") throw InputError("--checkpointing must be on or off, got '" + value + "'");
    request.options.checkpointing = value == "on";
    request.choices.checkpointing = {request.options.checkpointing};
  }
  if (args.count("shape")) request.choices.shapes = {parse_shape(split_list(args["shape"].as<std::string>()))};

  if (args.count("auto")) {
    if (args.count("stage-map")) throw InputError("give either --auto or --stage-map, not both");
  } else if (args.count("stage-map")) {
    request.map = load_stage_map_file(args["stage-map"].as<std::string>(), run.model);
  } else if (!run.stages.stages.empty()) {
    request.map = run.stages;
  } else {
    throw InputError("no stage map: give --stage-map FILE, a `stages:` section in the config, or --auto (try `pipetrain plan --help`)");
  }
  if (request.map) validate_stage_map(*request.map, request.model, request.hardware);

  const PlanOutcome outcome = run_plan(request);
  const std::vector<Remedy> remedies = outcome.fits ? std::vector<Remedy>{} : suggest_remedies(request, outcome);
  if (args.count("json")) {
    std::printf("%s\n", plan_to_json(request, outcome, remedies).dump(2).c_str());
  } else {
    std::printf("%s", format_plan_text(request, outcome, remedies).c_str());
  }
  return outcome.fits ? 0 : 2;
}

}  // namespace pipetrain::cli
