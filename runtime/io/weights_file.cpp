#include "runtime/io/weights_file.h"

#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include <map>
#include <set>
#include <utility>
#include <vector>

#include "memory/errors.h"
#include "runtime/io/atomic_file.h"
#include "runtime/io/checkpoint.h"
#include "runtime/io/safetensors.h"

namespace pipetrain {

namespace {

const std::string kParam = "param/";

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

std::string directory_of(const std::string& path) {
  const auto slash = path.find_last_of('/');
  return slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
}

// The parameters (name in the file, tensor) among a layer's state.
std::vector<std::pair<std::string, torch::Tensor>> layer_weights(const ModelConfig& model, int64_t layer,
                                                                 const std::vector<std::pair<std::string, torch::Tensor>>& state) {
  std::vector<std::pair<std::string, torch::Tensor>> weights;
  for (const auto& [key, tensor] : state) {
    if (key.rfind(kParam, 0) == 0) weights.emplace_back(weight_name(model, layer, key.substr(kParam.size())), tensor);
  }
  return weights;
}

nlohmann::ordered_json architecture_json(const ModelConfig& model, const std::string& tokenizer, int64_t step) {
  return {{"architecture", "pipetrain-gpt"},
          {"vocab_size", model.vocab_size},
          {"hidden_dim", model.hidden_dim},
          {"num_layers", model.num_layers},
          {"num_heads", model.num_heads},
          {"intermediate_size", model.intermediate_size},
          {"seq_len", model.seq_len},
          {"compute_dtype", dtype_name(model.dtype)},
          {"norm", "pre-LayerNorm, eps 1e-5"},
          {"activation", "gelu (erf)"},
          {"positions", "learned, seq_len of them"},
          {"attention", "causal multi-head, scaled by 1/sqrt(head_dim)"},
          {"tied_embeddings", false},
          {"tokenizer", tokenizer.empty() ? "bytes (token = byte value)" : "sentencepiece " + tokenizer},
          {"step", step}};
}

}  // namespace

std::string weight_name(const ModelConfig& model, int64_t layer, const std::string& param_key) {
  const LayerId id = layer_at(model, layer);
  switch (id.kind) {
    case LayerKind::kEmbed: return "embed." + param_key;
    case LayerKind::kBlock: return "blocks." + std::to_string(id.block_index) + "." + param_key;
    case LayerKind::kHead: return "head." + param_key;
  }
  throw std::logic_error("unknown layer kind");
}

void export_weights(const CheckpointInfo& checkpoint, const std::string& out_path, bool overwrite) {
  const RunConfig run = parse_run_config(checkpoint.config_yaml, "the config in checkpoint '" + checkpoint.path + "'");
  const std::string config_path = directory_of(out_path) + "/config.json";
  for (const std::string& path : {out_path, config_path}) {
    if (!overwrite && exists(path)) throw InputError("'" + path + "' exists; pass --force to replace it");
  }
  // Pass 1: names, dtypes and shapes, for the header that precedes the data.
  std::vector<SafetensorsTensor> declared;
  read_checkpoint_layers(checkpoint, [&](int64_t layer, const std::vector<std::pair<std::string, torch::Tensor>>& state) {
    for (const auto& [name, tensor] : layer_weights(run.model, layer, state)) {
      declared.push_back({name, safetensors_dtype(tensor.scalar_type()), tensor.sizes().vec()});
    }
  });
  // Pass 2: the data, one layer in memory at a time.
  SafetensorsWriter out(out_path, declared,
                        {{"format", "pt"}, {"pipetrain_model", checkpoint.model}, {"step", std::to_string(checkpoint.step)}});
  read_checkpoint_layers(checkpoint, [&](int64_t layer, const std::vector<std::pair<std::string, torch::Tensor>>& state) {
    for (const auto& [name, tensor] : layer_weights(run.model, layer, state)) {
      const torch::Tensor t = tensor.contiguous();
      out.write(t.data_ptr(), static_cast<uint64_t>(t.numel() * t.element_size()));
    }
  });
  out.commit();
  write_file_atomically(config_path, architecture_json(run.model, run.data.tokenizer, checkpoint.step).dump(2) + "\n");
}

std::string export_run_weights(const std::string& run_or_checkpoint, const std::string& out_path, bool overwrite) {
  const CheckpointInfo checkpoint = find_checkpoint(run_or_checkpoint);
  export_weights(checkpoint, out_path, overwrite);
  return "step " + std::to_string(checkpoint.step) + " of " + checkpoint.path + ", model " + checkpoint.model;
}

void init_from_weights(const std::string& path, const ModelConfig& model, LayerStates& states) {
  const SafetensorsFile file = read_safetensors_header(path);
  // What each layer needs, read once from the run (layer_state may copy its state off a device):
  // the checkpoint name, the file's tensor, the dtype to read it as.
  struct Needed {
    std::string key;
    const SafetensorsTensor* tensor;
    torch::ScalarType dtype;
  };
  std::vector<std::vector<Needed>> layers(static_cast<size_t>(model.num_model_layers()));
  std::set<std::string> needed;
  // Check everything first: a mismatch leaves the run as it was.
  for (int64_t layer = 0; layer < model.num_model_layers(); ++layer) {
    for (const auto& [key, tensor] : states.layer_state(layer)) {
      if (key.rfind(kParam, 0) != 0) continue;
      const std::string name = weight_name(model, layer, key.substr(kParam.size()));
      needed.insert(name);
      const SafetensorsTensor* t = file.find(name);
      const std::string want = safetensors_dtype(tensor.scalar_type()) + " " + shape_text(tensor.sizes().vec());
      if (t == nullptr) throw InputError("'" + path + "' has no tensor '" + name + "' (" + want + "), which this model needs");
      if (t->dtype != safetensors_dtype(tensor.scalar_type()) || t->shape != tensor.sizes().vec()) {
        throw InputError("'" + path + "': tensor '" + name + "' is " + t->dtype + " " + shape_text(t->shape) + "; this model needs " +
                         want + " (model " + architecture_key(model) + ")");
      }
      layers[static_cast<size_t>(layer)].push_back({key, t, tensor.scalar_type()});
    }
  }
  for (const auto& t : file.tensors) {
    if (needed.count(t.name) == 0) {
      throw InputError("'" + path + "' has tensor '" + t.name + "', which is no parameter of this model (" +
                       architecture_key(model) + ")");
    }
  }
  for (int64_t layer = 0; layer < model.num_model_layers(); ++layer) {
    std::vector<std::pair<std::string, torch::Tensor>> tensors;
    for (const Needed& n : layers[static_cast<size_t>(layer)]) {
      torch::Tensor value = torch::empty(n.tensor->shape, torch::TensorOptions().dtype(n.dtype));
      read_safetensors_data(file, *n.tensor, value.data_ptr());
      tensors.emplace_back(n.key, value);
    }
    states.set_layer_state(layer, tensors);
  }
}

}  // namespace pipetrain
