// A run's configuration: YAML with sections model, precision, train, data, hardware (a name or
// file) and stages (a stage map).
//
// Every key is checked: unknown keys, wrong types, non-positive sizes and inconsistent shapes are
// InputErrors naming the key and the value. Single keys can be overridden from the command line
// ("train.lr=1e-3"); an override goes through the same checks as the file.
//
//   RunConfig run = load_run_config(default_config_text(), {"train.steps=50"});
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "memory/model_config.h"
#include "memory/optimizer_config.h"
#include "memory/precision.h"
#include "memory/stage_map.h"
#include "scheduler/schedule.h"

namespace pipetrain {

struct TrainConfig {
  int64_t steps = 300;
  int64_t micro_batch_size = 4;
  int64_t micro_batches = 2;  // gradient accumulation: micro-batches per optimizer step
  OptimizerConfig optimizer;  // keys optimizer, lr, weight_decay, beta1, beta2, eps, momentum
  double min_lr_ratio = 0.1;  // cosine decays to lr * min_lr_ratio
  int64_t warmup_steps = 20;
  // Set when a resume changes train.steps (runtime/train/resume.h): from this step on, the learning
  // rate decays by cosine from lr_continue_value to the floor at train.steps, so it goes on from
  // where the run was instead of jumping to the new schedule's value. -1: the plain schedule.
  int64_t lr_continue_step = -1;
  double lr_continue_value = 0.0;
  double grad_clip = 1.0;  // global-norm clipping; 0 turns it off
  int64_t eval_interval = 50;
  int64_t eval_batches = 8;
  int64_t log_interval = 10;
  int64_t checkpoint_interval = 100;  // steps between checkpoints (and one at the end); 0: only at the end
  int64_t keep_checkpoints = 2;       // the newest this many stay on disk
  // Checkpoints are written on a thread of their own while training goes on; the next optimizer
  // update waits for one to finish (PipelineTrainer::save_checkpoint_in_background).
  bool background_checkpoints = false;
  int64_t seed = 1234;
  ScheduleKind schedule = ScheduleKind::named("1f1b");  // pipeline schedule (with a stage map)
  bool checkpointing = false;                       // activation checkpointing per stage
  // Streamed stages step each layer's optimizer as soon as its gradient is final, so gradients
  // never all exist at once; clipping is then per layer (memory/memory_options.h says how).
  bool layerwise_update = false;
  // A streamed stage's GPU window in layers (--auto chooses it; 1 to 64).
  int64_t window_layers = 2;
  // Data parallelism: copies of the whole pipeline, one per process group (runtime/dist/world.h),
  // each training micro_batches x micro_batch_size windows of a global batch `replicas` times that.
  // The learning rate is the config's, for the global batch (it is not scaled).
  int64_t replicas = 1;
  int64_t intra_op_threads = 0;  // 0 = choose for this machine
  int64_t blas_threads = 0;      // 0 = choose for this machine
};

struct DataConfig {
  std::vector<std::string> files;
  double val_fraction = 0.1;
  // A SentencePiece model (pipetrain tokenizer train); empty: bytes. model.vocab_size is taken from it.
  std::string tokenizer;
};

struct RunConfig {
  ModelConfig model;
  // What each device computes in (default: model.dtype everywhere), loss scaling; the optimizer
  // state's dtype is train.optimizer.state_dtype (precision.moments in the file).
  Precision precision;
  TrainConfig train;
  DataConfig data;
  std::string hardware = "this-machine";  // a preset of configs/hardware, a YAML file, or this-machine
  StageMap stages;                         // empty: none given
  std::string source;  // where the config came from, for messages
};

// The default config's YAML text (configs/default.yaml, embedded at build time).
const std::string& default_config_text();

// Parses YAML text, applies "section.key=value" overrides ("stages=none" drops the stage map),
// validates. `source` names the text in
// error messages (a file path, or "default config").
RunConfig parse_run_config(const std::string& yaml_text, const std::string& source,
                           const std::vector<std::string>& overrides = {});

// Reads the file (InputError if missing or unreadable), then as parse_run_config.
RunConfig load_run_config_file(const std::string& path, const std::vector<std::string>& overrides = {});

// The CLI's way in: the file at `path`, or the default config when there is none.
RunConfig load_run_config(const std::optional<std::string>& path, const std::vector<std::string>& overrides);

// The resolved config as YAML, written beside a run's outputs so the run can be repeated.
std::string to_yaml(const RunConfig& run);

}  // namespace pipetrain
