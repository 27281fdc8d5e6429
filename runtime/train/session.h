// A training run end to end, as `pipetrain train` does it: plan (or refuse with remedies, nothing
// allocated), build the trainer from the plan, resume, train with checkpoints, the memory guard
// and signals, then report measured against predicted.
//
//   TrainRequest request;  request.run = run;  request.hardware = hw;  request.automatic = true;
//   const int status = run_training_session(request);   // the process's exit status
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "memory/hardware.h"
#include "memory/stage_map.h"
#include "runtime/config/run_config.h"
#include "runtime/dist/world.h"
#include "runtime/io/checkpoint.h"

namespace pipetrain {

struct TrainRequest {
  RunConfig run;          // resolved: the config with every override applied
  HardwareSpec hardware;  // the budgets to plan for (a --vram-cap-gib applied)
  bool automatic = false;                // the planner chooses the split
  std::optional<StageMap> stage_map;     // given on the command line; else the config's, else one CPU stage
  bool gpu_stages_on_cpu = false;        // run stages placed on a missing GPU on the CPU, with a warning
  std::optional<CheckpointInfo> resume;  // continue this (verified) checkpoint of run_dir
  std::vector<std::string> allowed_changes;  // what a resume may change (runtime/train/resume.h)
  std::optional<std::string> init_from;  // start from this safetensors file's weights (runtime/io/weights_file.h)
  std::string run_dir;                   // where metrics, config and checkpoints go
  bool overwrite = false;                // run_dir may already hold a run
  std::optional<std::string> trace_path;
  bool print_config = false;             // print the resolved config with the plan's decisions, and stop
  // This process among the run's processes (runtime/dist/world.h): train.replicas of them, each a
  // copy of the pipeline. Rank 0 writes the run directory (metrics, checkpoints, config); every rank
  // agrees on the config and plan before anything is allocated.
  WorldSpec world;
};

// Returns the exit status: 0 done, 1 stopped by the memory guard, 128 + signal when stopped by one.
// InputError for what is refused before anything is allocated (a plan that does not fit, a run
// directory that holds a run); anything else that escapes is a runtime failure.
int run_training_session(const TrainRequest& request);

}  // namespace pipetrain
