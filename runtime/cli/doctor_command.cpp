#include <cxxopts.hpp>

#include <cstdio>

#include "memory/machine_probe.h"
#include "runtime/cli/cli_util.h"
#include "runtime/cli/commands.h"
#include "runtime/config.h"
#include "runtime/doctor.h"

namespace pipetrain::cli {

int doctor_command(int argc, char** argv) {
  cxxopts::Options options("pipetrain doctor",
                           "Checks LibTorch and CUDA, GPUs, the BLAS in use (with a one-second matmul), threads and "
                           "memory, and warns about known traps.");
  options.add_options()
      ("config", "show the thread choice for this config's train section", cxxopts::value<std::string>())
      ("h,help", "show this help");
  const auto parsed = parse_command(options, argc, argv, "doctor");
  if (!parsed) return 0;
  const RunConfig run = config_from_args(*parsed);
  const ThreadChoice threads = choose_threads(run.train.intra_op_threads, run.train.blas_threads, usable_cores());
  print_report(examine_machine(threads), stdout);
  return 0;
}

}  // namespace pipetrain::cli
