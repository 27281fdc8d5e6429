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
#include "runtime/cli/commands.h"
#include "runtime/config.h"
#include "runtime/metrics.h"
#include "runtime/threads.h"
#include "runtime/trainer.h"

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

bool exists(const std::string& path) {
  struct stat info {};
  return ::stat(path.c_str(), &info) == 0;
}

}  // namespace

int train_command(int argc, char** argv) {
  cxxopts::Options options("pipetrain train",
                           "Trains a model on one device (the reference trainer). With no --config it trains the "
                           "default config (configs/default.yaml) on the licence texts every Debian system ships.");
  options.add_options()
      ("c,config", "YAML config with sections model, train, data", cxxopts::value<std::string>())
      ("steps", "optimizer steps (overrides train.steps)", cxxopts::value<int64_t>())
      ("o,out", "output directory for metrics.jsonl and config.yaml (default: runs/<date-time>)",
       cxxopts::value<std::string>())
      ("set", "override one config key, e.g. --set train.lr=1e-3 (repeatable)",
       cxxopts::value<std::vector<std::string>>())
      ("overwrite", "allow --out to name a directory that already holds a run")
      ("print-config", "print the resolved config and exit")
      ("h,help", "show this help");
  const auto args = options.parse(argc, argv);
  if (args.count("help")) {
    std::printf("%s\n", options.help().c_str());
    return 0;
  }
  if (!args.unmatched().empty()) {
    throw InputError("unexpected argument '" + args.unmatched().front() + "' (try `pipetrain train --help`)");
  }

  std::vector<std::string> overrides;
  if (args.count("set")) overrides = args["set"].as<std::vector<std::string>>();
  if (args.count("steps")) overrides.push_back("train.steps=" + std::to_string(args["steps"].as<int64_t>()));
  const RunConfig run = load_run_config(args.count("config") ? std::optional<std::string>(args["config"].as<std::string>()) : std::nullopt, overrides);
  if (!run.stages.stages.empty()) {
    throw InputError(run.source + " has a `stages:` stage map, but this build trains on one device only (pipelined "
                     "training is the next issue); remove `stages:` to train, or check the map with `pipetrain plan`");
  }
  if (args.count("print-config")) {
    std::printf("%s", to_yaml(run).c_str());
    return 0;
  }

  const std::string out_dir = args.count("out") ? args["out"].as<std::string>() : default_out_dir();
  const std::string metrics_path = out_dir + "/metrics.jsonl";
  if (exists(metrics_path) && !args.count("overwrite")) {
    throw InputError("'" + out_dir + "' already holds a run (" + metrics_path +
                     "); choose another --out, or pass --overwrite to replace it");
  }

  const ThreadChoice threads = choose_threads(run.train.intra_op_threads, run.train.blas_threads, usable_cores());
  apply_threads(threads);

  // Everything that can be refused is checked before the output directory is touched.
  ReferenceTrainer trainer(run, torch::kCPU);
  make_dirs(out_dir);
  {
    std::ofstream config_out(out_dir + "/config.yaml", std::ios::trunc);
    config_out << "# resolved config of this run (" << run.source << ")\n" << to_yaml(run);
    if (!config_out) throw InputError("cannot write '" + out_dir + "/config.yaml'");
  }
  MetricsWriter metrics(metrics_path);

  std::printf("pipetrain train: %s, %lld parameters, %lld layers, %s on cpu\n", run.source.c_str(),
              static_cast<long long>(total_param_count(run.model)), static_cast<long long>(run.model.num_layers),
              dtype_name(run.model.dtype).c_str());
  std::printf("data: %lld bytes in %zu file(s), %lld training and %lld validation windows of %lld tokens\n",
              static_cast<long long>(trainer.corpus().total_bytes()), run.data.files.size(),
              static_cast<long long>(trainer.corpus().num_train_windows()),
              static_cast<long long>(trainer.corpus().num_val_windows()), static_cast<long long>(run.model.seq_len));
  std::printf("threads: %d intra-op, %d BLAS (%s)\n", intra_op_threads(), blas_threads(), threads.reason.c_str());
  std::printf("metrics: %s\n", metrics_path.c_str());
  std::fflush(stdout);

  ProgressLine progress(stderr, run.train.steps, run.train.log_interval);
  const RunSummary summary = run_training(trainer, [&](const StepRecord& record) {
    metrics.write(record);
    progress.update(record);
  });
  progress.finish();

  const double drop = 100.0 * (summary.initial_val_loss - summary.final_val_loss) / summary.initial_val_loss;
  std::printf("done: %lld steps in %.1f s, median %.0f tokens/s; validation loss %.4f -> %.4f (%.1f%% lower)\n",
              static_cast<long long>(summary.steps), summary.seconds, summary.median_tokens_per_s,
              summary.initial_val_loss, summary.final_val_loss, drop);
  std::printf("metrics written to %s\n", metrics_path.c_str());
  return 0;
}

}  // namespace pipetrain::cli
