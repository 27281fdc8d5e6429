// pipetrain: train a transformer split across CPU and GPU, with a plan computed before anything is
// allocated. This file only dispatches to a command and turns errors into exit statuses.
#include <cxxopts.hpp>

#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "memory/errors.h"
#include "runtime/cli/commands.h"
#include "runtime/backends/cpu/host_allocator.h"

namespace {

void print_usage(std::FILE* out) {
  std::fprintf(out,
               "usage: pipetrain <command> [options]\n\n"
               "commands:\n"
               "  train    train a model (no --config: the default config on the bundled default data)\n"
               "  plan     size every stage against the memory budgets, predict speed, choose a split (--auto)\n"
               "  bench    measure tokens/s per split against the planner's prediction\n"
               "  profile  measure each layer's time on this machine; write a hardware profile for plan and train\n"
               "  generate write text from a trained model (a run directory or a checkpoint)\n"
               "  export   write a trained model's weights as safetensors (train --init-from reads them)\n"
               "  tokenizer train a subword tokenizer (SentencePiece), or count tokens per character (stats)\n"
               "  report   summarise and plot runs (loss, tokens/s, bubble, memory), several overlaid\n"
               "  doctor   check LibTorch, CUDA, BLAS, threads and memory on this machine\n\n"
               "`pipetrain <command> --help` lists a command's options.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    print_usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  // Before any tensor exists: resident memory then follows what training holds (runtime/host_allocator.h).
  pipetrain::HostCachingAllocator::install();
  try {
    if (command == "train") return pipetrain::cli::train_command(argc - 1, argv + 1);
    if (command == "doctor") return pipetrain::cli::doctor_command(argc - 1, argv + 1);
    if (command == "plan") return pipetrain::cli::plan_command(argc - 1, argv + 1);
    if (command == "profile") return pipetrain::cli::profile_command(argc - 1, argv + 1);
    if (command == "bench") return pipetrain::cli::bench_command(argc - 1, argv + 1);
    if (command == "generate") return pipetrain::cli::generate_command(argc - 1, argv + 1);
    if (command == "export") return pipetrain::cli::export_command(argc - 1, argv + 1);
    if (command == "report") return pipetrain::cli::report_command(argc - 1, argv + 1);
    if (command == "tokenizer") return pipetrain::cli::tokenizer_command(argc - 1, argv + 1);
    std::fprintf(stderr, "error: unknown command '%s' (try `pipetrain --help`)\n", command.c_str());
    return 2;
  } catch (const pipetrain::InputError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  } catch (const cxxopts::exceptions::exception& e) {
    std::fprintf(stderr, "error: %s (try `pipetrain %s --help`)\n", e.what(), command.c_str());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
