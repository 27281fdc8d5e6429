// Checkpoints that survive the process dying at any moment, and resume bit for bit.
//
//   <run>/checkpoints/step-00000120/manifest.json     step, data position, model, config, files
//                                   layer-0000.pt ...  one file per layer of the model's layer list:
//                                                      its parameters and their optimizer state
// Keyed by layer, not by stage, so a run can resume under another stage map. A checkpoint is
// written into step-N.partial/ (every file fsynced, the manifest last), then renamed into place
// and the directory fsynced: until that rename the previous checkpoint is the newest complete
// one, and a reader never sees half a checkpoint. The manifest holds each file's size and CRC-32;
// loading verifies both and the model before touching the trainer.
//
//   save_checkpoint(out_dir, trainer, run, /*keep=*/2);
//   CheckpointInfo newest = newest_checkpoint(out_dir);   // InputError when none verifies
//   load_checkpoint(newest, trainer);
#pragma once

#include <cstdint>
#include <string>

#include "runtime/config.h"
#include "runtime/data.h"

namespace pipetrain {

class PipelineTrainer;

struct CheckpointInfo {
  std::string path;
  int64_t step = 0;
  DataPosition data;
  std::string model;        // architecture_key() of the model that wrote it
  std::string config_yaml;  // the run's resolved config
};

// "V256 H256 L4 A4 I1024 T128 float32": what must match for weights to load.
std::string architecture_key(const ModelConfig& model);

// IEEE CRC-32 of a byte string.
uint32_t crc32(const std::string& bytes);

// Writes a checkpoint of the trainer's state after its last step; keeps the newest `keep`.
// Returns its path. InputError (naming the path and the OS's reason) when it cannot be written;
// the previous checkpoints are then untouched.
std::string save_checkpoint(const std::string& run_dir, PipelineTrainer& trainer, const RunConfig& run, int64_t keep);

// Reads and verifies a checkpoint directory (manifest, sizes, checksums); InputError naming the
// file and what is wrong.
CheckpointInfo verify_checkpoint(const std::string& path);

// The newest checkpoint under run_dir/checkpoints that verifies; InputError saying why each failed
// when none does.
CheckpointInfo newest_checkpoint(const std::string& run_dir);

// Loads a verified checkpoint into the trainer (any stage map of the same model). InputError when
// the model differs or a file does not fit.
void load_checkpoint(const CheckpointInfo& checkpoint, PipelineTrainer& trainer);

}  // namespace pipetrain
