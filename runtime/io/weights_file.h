// A model's weights as a safetensors file (runtime/io/safetensors.h), out of a checkpoint and into a
// run: what other tools read, and what a fine-tuning run starts from.
//
// Tensor names (documented in the README, "Weights files"), for a model of L blocks:
//   embed.tokens.weight     [vocab, hidden]       embed.positions.weight  [seq_len, hidden]
//   blocks.{i}.ln1.weight, .ln1.bias, .qkv.weight [3*hidden, hidden], .qkv.bias, .attn_out.weight,
//     .attn_out.bias, .ln2.weight, .ln2.bias, .fc_in.weight [intermediate, hidden], .fc_in.bias,
//     .fc_out.weight [hidden, intermediate], .fc_out.bias                          (i = 0 .. L-1)
//   head.norm.weight, head.norm.bias, head.lm_head.weight [vocab, hidden]
// Linear weights are [out, in] (y = x W^T + b); qkv's rows are q, then k, then v, each head's
// head_dim rows together. The weights are those the optimizer keeps: float32 masters when the run
// computed in 16 bits.
//
//   export_weights(find_checkpoint("runs/x"), "model.safetensors");   // and config.json beside it
//   init_from_weights("model.safetensors", run.model, trainer);        // before step 0
//
// No LibTorch in this header: the export command includes it alone.
#pragma once

#include <cstdint>
#include <string>

#include "memory/model_config.h"

namespace pipetrain {

struct CheckpointInfo;
class LayerStates;

// The file's name for parameter `param_key` ("qkv.weight") of layer `layer` of `model`.
std::string weight_name(const ModelConfig& model, int64_t layer, const std::string& param_key);

// Writes the checkpoint's weights to `out_path` (metadata: format pt, the model's architecture key,
// the step), and `config.json` beside it describing the architecture. Refuses (InputError) to
// replace either file unless `overwrite`. One layer is in memory at a time.
void export_weights(const CheckpointInfo& checkpoint, const std::string& out_path, bool overwrite);

// The same for a run directory's newest verified checkpoint, or a checkpoint directory
// (find_checkpoint); returns what was exported: "step 300 of runs/x/checkpoints/step-00000300, model V256 ...".
std::string export_run_weights(const std::string& run_or_checkpoint, const std::string& out_path, bool overwrite);

// Sets every layer's parameters in `states` from the file at `path` (their optimizer state is left
// as it is: fresh before step 0). Every parameter of `model` must be there under its name, with its
// shape and the dtype the run keeps it in, and nothing else may be: InputError naming the tensor and
// both values otherwise, checked for the whole file before any parameter changes.
void init_from_weights(const std::string& path, const ModelConfig& model, LayerStates& states);

}  // namespace pipetrain
