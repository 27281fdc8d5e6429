// Checkpoints that survive the process dying at any moment, and resume bit for bit.
//
//   <run>/checkpoints/step-00000120/manifest.json          step, data position, model, config, files
//                                   layer-0000.safetensors  one file per layer of the model's layer list:
//                                   ...                     its parameters and their optimizer state
// Keyed by layer, not by stage, so a run can resume under another stage map. A checkpoint is
// written into step-N.partial/ (every file fsynced, the manifest last), then renamed into place
// and the directory fsynced: until that rename the previous checkpoint is the newest complete
// one, and a reader never sees half a checkpoint. The manifest holds each file's size and CRC-32;
// loading verifies both and the model before touching the trainer.
//
// A save streams: each tensor goes to its file from where it lies, in parts of kSaveChunkBytes, and
// the CRC-32 is computed on the way. A tensor on a GPU is copied to the CPU through one staging
// buffer of that size, a part at a time. So what a save allocates beyond the model is that buffer
// and small bookkeeping, whatever the size of a layer (test_checkpoint counts it), which matters
// when the memory guard has just stopped a run at 95% of its budget. Verifying reads through a
// buffer of the same size. (Checkpoints of format 1, LibTorch archives layer-N.pt, still load.)
//
//   save_checkpoint(out_dir, trainer, run, trainer.steps_done(), trainer.corpus().position(), /*keep=*/2);
//   CheckpointInfo newest = newest_checkpoint(out_dir);   // InputError when none verifies
//   load_checkpoint(newest, run.model, trainer);
//   trainer.restore_progress(newest.step, newest.data);
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "runtime/config/run_config.h"
#include "runtime/data/corpus.h"
#include "runtime/io/crc32.h"

namespace pipetrain {

// The part size of a save's writes and a GPU tensor's staging buffer (and of the verifier's reads).
constexpr int64_t kSaveChunkBytes = int64_t{16} << 20;

// What a checkpoint saves and restores: each layer's parameters and optimizer state, by name
// ("param/<name>", "state/<name>/<key>"). The trainer implements it, whatever its stage map.
class LayerStates {
 public:
  virtual ~LayerStates() = default;
  virtual std::vector<std::pair<std::string, torch::Tensor>> layer_state(int64_t layer) const = 0;
  // Restores what layer_state returned (the tensors may be on the CPU); throws std::runtime_error
  // naming the tensor that is missing, extra or of the wrong shape.
  virtual void set_layer_state(int64_t layer, const std::vector<std::pair<std::string, torch::Tensor>>& tensors) = 0;
};

struct CheckpointInfo {
  std::string path;
  int64_t step = 0;
  DataPosition data;
  std::string model;        // architecture_key() of the model that wrote it
  std::string config_yaml;  // the run's resolved config
  std::map<std::string, double> scalars;  // the trainer's other state (the loss scale), by name
  // Fingerprints of what the run read ("data", "tokenizer": hex FNV-1a), for a resume to compare;
  // empty in checkpoints written before they were recorded.
  std::map<std::string, std::string> inputs;
};

// The safetensors name ("F32", "BF16", "I64", ...) of a dtype a layer's state may hold;
// std::logic_error for another.
std::string safetensors_dtype(torch::ScalarType type);

// Writes a checkpoint of the state after `step` steps, with the data stream at `data`; keeps the
// newest `keep`. Returns its path. InputError (naming the path and the OS's reason) when it cannot be
// written; the previous checkpoints are then untouched.
std::string save_checkpoint(const std::string& run_dir, const LayerStates& states, const RunConfig& run, int64_t step,
                            const DataPosition& data, int64_t keep, const std::map<std::string, double>& scalars = {},
                            const std::map<std::string, std::string>& inputs = {});

// Reads and verifies a checkpoint directory (manifest, sizes, checksums); InputError naming the
// file and what is wrong.
CheckpointInfo verify_checkpoint(const std::string& path);

// The newest checkpoint under run_dir/checkpoints that verifies; InputError saying why each failed
// when none does.
CheckpointInfo newest_checkpoint(const std::string& run_dir);

// A run directory's newest verified checkpoint, or `path` itself when it is a checkpoint directory
// (it holds a manifest.json): what export and generate accept.
CheckpointInfo find_checkpoint(const std::string& path);

// Reads a verified checkpoint's layers one at a time, in order, handing each layer's tensors (by
// name, as LayerStates names them; on the CPU) to `visit`: one layer's worth of memory at a time.
// InputError naming the file that cannot be read.
void read_checkpoint_layers(
    const CheckpointInfo& checkpoint,
    const std::function<void(int64_t layer, const std::vector<std::pair<std::string, torch::Tensor>>& tensors)>& visit);

// Loads a verified checkpoint of `model` into `states` (any stage map of the same model); the caller
// then continues from checkpoint.step and checkpoint.data. InputError when the model differs or a
// file does not fit.
void load_checkpoint(const CheckpointInfo& checkpoint, const ModelConfig& model, LayerStates& states);

}  // namespace pipetrain
