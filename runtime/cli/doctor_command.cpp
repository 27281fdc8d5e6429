#include <cxxopts.hpp>

#include <cstdio>

#include "memory/units.h"
#include "memory/errors.h"
#include "memory/machine_probe.h"
#include "runtime/cli/cli_util.h"
#include "runtime/cli/commands.h"
#include "runtime/config/run_config.h"
#include "runtime/backends/registry.h"
#include "runtime/tools/doctor.h"

namespace pipetrain::cli {

int doctor_command(int argc, char** argv) {
  cxxopts::Options options("pipetrain doctor",
                           "Checks LibTorch and CUDA, GPUs, the BLAS in use (with a one-second matmul), threads and "
                           "memory, and warns about known traps.");
  options.add_options()
      ("config", "show the thread choice for this config's train section", cxxopts::value<std::string>())
      ("vram-cap-gib", "also cap every GPU's caching allocator at this many GiB and report it", cxxopts::value<double>())
      ("h,help", "show this help");
  const auto parsed = parse_command(options, argc, argv, "doctor");
  if (!parsed) return 0;
  const RunConfig run = config_from_args(*parsed);
  const ThreadChoice threads = choose_threads(run.train.intra_op_threads, run.train.blas_threads, usable_cores());
  // Bad options are refused before the one-second checks run.
  const int gpus = cuda_device_count();
  const std::optional<int64_t> cap = vram_cap_bytes(*parsed);
  if (cap && gpus == 0) throw InputError("--vram-cap-gib needs a GPU, and " + torch_build_description());
  print_report(examine_machine(threads), stdout);
  // The VRAM cap: train, plan and bench hold each GPU to the hardware description's memory.
  for (int i = 0; i < gpus; ++i) {
    const DeviceId gpu = DeviceId::cuda(i);
    if (cap) cap_device_memory(gpu, *cap);
    const DeviceMemoryReport v = device_memory_report(gpu);
    std::printf("VRAM cap        cuda:%d %s (card %s); train, plan and bench hold each GPU to the hardware's memory, "
                "--vram-cap-gib to less\n",
                i, v.cap_bytes > 0 ? ("caching allocator held to " + format_gib(v.cap_bytes)).c_str() : "none",
                format_gib(v.total_bytes).c_str());
  }
  return 0;
}

}  // namespace pipetrain::cli
