// The devices this build and this machine have, and the stage map's device names mapped onto them.
//
// This file (devices.cpp) is the one place that asks about CUDA. A stage map that names cuda:N on a
// build without CUDA, or a machine without that GPU, is refused (InputError, exit 2), unless the
// user asked for GPU stages to run on the CPU; then each such stage becomes a CPU stage sharing the
// CPU's pool, and a warning says so.
//
//   std::vector<std::string> warnings;
//   StageMap map = place_stages(run.stages, /*gpu_stages_on_cpu=*/false, &warnings);
//   torch::Device d = torch_device(map.stages[0].device);
#pragma once

#include <torch/types.h>

#include <string>
#include <vector>

#include "memory/stage_map.h"

namespace pipetrain {

bool cuda_available();
int cuda_device_count();
// "LibTorch 1.13.1, CPU only" or "LibTorch 2.11.0 with CUDA, 1 GPU".
std::string torch_build_description();

// The map with every device checked against this build and machine (see above).
StageMap place_stages(const StageMap& map, bool gpu_stages_on_cpu, std::vector<std::string>* warnings);

// The planner's default shapes (scheduler/planner.h) whose devices this build and machine can run.
std::vector<std::vector<std::string>> runnable_shapes(const HardwareSpec& hardware);

// "cpu" -> kCPU, "cuda:1" -> {kCUDA, 1}. The name must have passed place_stages.
torch::Device torch_device(const std::string& name);

}  // namespace pipetrain
