#include "runtime/io/checkpoint.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <torch/serialize/input-archive.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "memory/errors.h"
#include "runtime/io/atomic_file.h"
#include "runtime/io/safetensors.h"

namespace pipetrain {
namespace {

// 2: one safetensors file per layer, written in parts. 1 (still read): LibTorch archives (.pt).
constexpr const char* kFormat = "pipetrain-checkpoint-2";
constexpr const char* kFormatArchives = "pipetrain-checkpoint-1";

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError("checkpoint file '" + path + "' cannot be read");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void fsync_path(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) throw InputError("cannot open '" + path + "' to flush it: " + std::strerror(errno));
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) throw InputError("cannot flush '" + path + "' to disk: " + std::strerror(errno));
}

void make_dir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
    throw InputError("cannot create '" + path + "': " + std::strerror(errno));
  }
}

// Not std::system("rm -rf"): system() ignores SIGINT while its child runs, and with a checkpoint
// every step that window swallowed most interrupts (found by the second-SIGINT test). Not
// std::filesystem::remove_all either: built against PyTorch's LibTorch (whose libraries carry their
// own copies of std::filesystem) it crashed on a null function pointer (H200 run, 2026-11-27).
// nftw walks depth-first without following links; each entry is removed after its contents.
int remove_entry(const char* path, const struct stat*, int, struct FTW*) {
  ::remove(path);
  return 0;  // go on: what cannot be removed stays, as with rm -rf's errors ignored
}

void remove_tree(const std::string& path) { ::nftw(path.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS); }

std::string step_dir_name(int64_t step) {
  char name[32];
  std::snprintf(name, sizeof(name), "step-%08lld", static_cast<long long>(step));
  return name;
}

// Complete checkpoints (step-N, not .partial) under dir, newest first.
std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return found;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.rfind("step-", 0) != 0 || name.find('.') != std::string::npos) continue;
    char* end = nullptr;
    const long long step = std::strtoll(name.c_str() + 5, &end, 10);
    if (end == nullptr || *end != '\0') continue;
    found.emplace_back(step, dir + "/" + name);
  }
  ::closedir(d);
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  return found;
}

torch::ScalarType torch_dtype(const std::string& name, const std::string& file) {
  static const std::map<std::string, torch::ScalarType> types = {
      {"F32", torch::kFloat32}, {"F64", torch::kFloat64}, {"BF16", torch::kBFloat16}, {"F16", torch::kHalf},
      {"I64", torch::kInt64},   {"I32", torch::kInt32},   {"I16", torch::kInt16},     {"I8", torch::kInt8},
      {"U8", torch::kUInt8},    {"BOOL", torch::kBool}};
  const auto it = types.find(name);
  if (it == types.end()) throw InputError("checkpoint file '" + file + "' holds dtype " + name + ", which no layer state has");
  return it->second;
}

// A tensor's bytes to the file in parts of at most kSaveChunkBytes. A CPU tensor is written from
// where it lies; one on a GPU is copied through `staging` part by part, so no copy of it is made
// whole. (A non-contiguous tensor is made contiguous first: parameters and optimizer state never
// are.)
void write_in_chunks(SafetensorsWriter& out, const torch::Tensor& tensor, std::vector<char>& staging) {
  const torch::Tensor flat = tensor.is_contiguous() ? tensor.reshape({-1}) : tensor.contiguous().reshape({-1});
  const int64_t element = flat.element_size();
  const int64_t per_chunk = std::max<int64_t>(1, kSaveChunkBytes / element);
  const int64_t n = flat.numel();
  if (flat.device().is_cpu()) {
    const char* base = static_cast<const char*>(flat.data_ptr());
    for (int64_t at = 0; at < n; at += per_chunk) {
      out.write(base + at * element, static_cast<uint64_t>(std::min(per_chunk, n - at) * element));
    }
    return;
  }
  if (staging.empty()) staging.resize(static_cast<size_t>(kSaveChunkBytes));
  const torch::Tensor buffer =
      torch::from_blob(staging.data(), {per_chunk}, torch::TensorOptions().dtype(flat.scalar_type()).device(torch::kCPU));
  for (int64_t at = 0; at < n; at += per_chunk) {
    const int64_t count = std::min(per_chunk, n - at);
    buffer.narrow(0, 0, count).copy_(flat.narrow(0, at, count));
    out.write(staging.data(), static_cast<uint64_t>(count * element));
  }
}

// A file's size and CRC-32, read through a buffer of kSaveChunkBytes.
std::pair<uint64_t, uint32_t> size_and_crc(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError("checkpoint file '" + path + "' cannot be read");
  std::vector<char> buffer(static_cast<size_t>(kSaveChunkBytes));
  uint64_t size = 0;
  uint32_t crc = 0;
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    const auto got = static_cast<size_t>(in.gcount());
    crc = crc32_update(crc, buffer.data(), got);
    size += got;
  }
  return {size, crc};
}

}  // namespace

std::string safetensors_dtype(torch::ScalarType type) {
  switch (type) {
    case torch::kFloat32: return "F32";
    case torch::kFloat64: return "F64";
    case torch::kBFloat16: return "BF16";
    case torch::kHalf: return "F16";
    case torch::kInt64: return "I64";
    case torch::kInt32: return "I32";
    case torch::kInt16: return "I16";
    case torch::kInt8: return "I8";
    case torch::kUInt8: return "U8";
    case torch::kBool: return "BOOL";
    default: throw std::logic_error(std::string("a checkpoint cannot hold dtype ") + c10::toString(type));
  }
}

std::string save_checkpoint(const std::string& run_dir, const LayerStates& states, const RunConfig& run, int64_t step,
                            const DataPosition& data, int64_t keep, const std::map<std::string, double>& scalars,
                            const std::map<std::string, std::string>& inputs) {
  const std::string dir = run_dir + "/checkpoints";
  make_dir(dir);
  const std::string final_path = dir + "/" + step_dir_name(step);
  const std::string partial = final_path + ".partial";
  remove_tree(partial);  // a save that died half-way
  make_dir(partial);

  nlohmann::json files = nlohmann::json::array();
  std::vector<char> staging;  // kSaveChunkBytes, made when a tensor off the CPU first needs it
  try {
    for (int64_t layer = 0; layer < run.model.num_model_layers(); ++layer) {
      char name[48];
      std::snprintf(name, sizeof(name), "layer-%04lld.safetensors", static_cast<long long>(layer));
      const std::vector<std::pair<std::string, torch::Tensor>> state = states.layer_state(layer);
      std::vector<SafetensorsTensor> declared;
      nlohmann::json tensor_names = nlohmann::json::array();
      for (const auto& [key, tensor] : state) {
        declared.push_back({key, safetensors_dtype(tensor.scalar_type()), tensor.sizes().vec()});
        tensor_names.push_back(key);
      }
      SafetensorsWriter out(partial + "/" + name, declared, {{"layer", std::to_string(layer)}});
      for (const auto& [key, tensor] : state) write_in_chunks(out, tensor, staging);
      out.commit();
      files.push_back({{"name", name}, {"layer", layer}, {"bytes", out.size()}, {"crc32", out.crc32()},
                       {"tensors", tensor_names}});
    }
  } catch (const c10::Error& e) {
    remove_tree(partial);
    throw InputError("cannot write a checkpoint in '" + partial + "': " + e.what_without_backtrace());
  } catch (...) {
    remove_tree(partial);
    throw;
  }
  nlohmann::json manifest = {{"format", kFormat},
                             {"step", step},
                             {"data", {{"epoch", data.epoch}, {"cursor", data.cursor}}},
                             {"model", architecture_key(run.model)},
                             {"layers", run.model.num_model_layers()},
                             {"config", to_yaml(run)},
                             {"scalars", scalars},
                             {"inputs", inputs},
                             {"files", files}};
  try {
    write_file_atomically(partial + "/manifest.json", manifest.dump(1) + "\n");
  } catch (...) {
    remove_tree(partial);
    throw;
  }
  remove_tree(final_path);  // the same step saved before (a resumed run): replaced whole
  if (std::rename(partial.c_str(), final_path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    remove_tree(partial);
    throw InputError("cannot move the checkpoint into place at '" + final_path + "': " + why);
  }
  fsync_path(dir, true);
  const auto all = list_checkpoints(dir);
  for (size_t i = static_cast<size_t>(std::max<int64_t>(keep, 1)); i < all.size(); ++i) remove_tree(all[i].second);
  return final_path;
}

CheckpointInfo verify_checkpoint(const std::string& path) {
  const std::string manifest_path = path + "/manifest.json";
  nlohmann::json manifest;
  try {
    manifest = nlohmann::json::parse(read_bytes(manifest_path));
  } catch (const nlohmann::json::exception& e) {
    throw InputError("checkpoint manifest '" + manifest_path + "' is not valid JSON: " + e.what());
  }
  CheckpointInfo info;
  info.path = path;
  try {
    const std::string format = manifest.at("format").get<std::string>();
    if (format != kFormat && format != kFormatArchives) {
      throw InputError("'" + manifest_path + "' is format " + manifest.at("format").dump() + ", not " + kFormat + " (or " +
                       kFormatArchives + ")");
    }
    info.step = manifest.at("step").get<int64_t>();
    info.data.epoch = manifest.at("data").at("epoch").get<int64_t>();
    info.data.cursor = manifest.at("data").at("cursor").get<int64_t>();
    info.model = manifest.at("model").get<std::string>();
    info.config_yaml = manifest.at("config").get<std::string>();
    if (manifest.contains("scalars")) info.scalars = manifest.at("scalars").get<std::map<std::string, double>>();
    if (manifest.contains("inputs")) info.inputs = manifest.at("inputs").get<std::map<std::string, std::string>>();
    const int64_t layers = manifest.at("layers").get<int64_t>();
    const auto& files = manifest.at("files");
    if (static_cast<int64_t>(files.size()) != layers) {
      throw InputError("'" + manifest_path + "' lists " + std::to_string(files.size()) + " files for " +
                       std::to_string(layers) + " layers");
    }
    for (const auto& f : files) {
      const std::string file = path + "/" + f.at("name").get<std::string>();
      const auto [bytes, computed] = size_and_crc(file);
      const auto size = f.at("bytes").get<uint64_t>();
      if (bytes != size) {
        throw InputError("checkpoint file '" + file + "' has " + std::to_string(bytes) + " bytes; the manifest says " +
                         std::to_string(size) + " (truncated or replaced)");
      }
      const auto stored = f.at("crc32").get<uint32_t>();
      if (stored != computed) {
        char text[160];
        std::snprintf(text, sizeof(text), " fails its checksum: CRC-32 %08x, the manifest says %08x (corrupted)", computed, stored);
        throw InputError("checkpoint file '" + file + "'" + text);
      }
    }
  } catch (const nlohmann::json::exception& e) {
    throw InputError("checkpoint manifest '" + manifest_path + "' lacks a field or has a wrong type: " + e.what());
  }
  return info;
}

CheckpointInfo newest_checkpoint(const std::string& run_dir) {
  const std::string dir = run_dir + "/checkpoints";
  const auto all = list_checkpoints(dir);
  if (all.empty()) throw InputError("'" + run_dir + "' has no checkpoint (looked for " + dir + "/step-N)");
  std::string reasons;
  for (const auto& [step, path] : all) {
    try {
      return verify_checkpoint(path);
    } catch (const InputError& e) {
      reasons += std::string("\n  ") + e.what();
    }
  }
  throw InputError("no checkpoint in '" + dir + "' verifies:" + reasons);
}

CheckpointInfo find_checkpoint(const std::string& path) {
  struct stat st {};
  if (::stat((path + "/manifest.json").c_str(), &st) == 0) return verify_checkpoint(path);
  if (::stat(path.c_str(), &st) != 0) throw InputError("'" + path + "' does not exist (give a run directory or a checkpoint)");
  return newest_checkpoint(path);
}

void read_checkpoint_layers(
    const CheckpointInfo& checkpoint,
    const std::function<void(int64_t layer, const std::vector<std::pair<std::string, torch::Tensor>>& tensors)>& visit) {
  const nlohmann::json manifest = nlohmann::json::parse(read_bytes(checkpoint.path + "/manifest.json"));
  for (const auto& f : manifest.at("files")) {
    const std::string file = checkpoint.path + "/" + f.at("name").get<std::string>();
    const int64_t layer = f.at("layer").get<int64_t>();
    std::vector<std::pair<std::string, torch::Tensor>> tensors;
    const std::string suffix = ".safetensors";
    if (file.size() > suffix.size() && file.compare(file.size() - suffix.size(), suffix.size(), suffix) == 0) {
      const SafetensorsFile st = read_safetensors_header(file);
      for (const auto& name : f.at("tensors")) {
        const SafetensorsTensor* t = st.find(name.get<std::string>());
        if (t == nullptr) throw InputError("checkpoint file '" + file + "' lacks tensor " + name.get<std::string>());
        torch::Tensor value = torch::empty(t->shape, torch::TensorOptions().dtype(torch_dtype(t->dtype, file)));
        read_safetensors_data(st, *t, value.data_ptr());
        tensors.emplace_back(name.get<std::string>(), value);
      }
    } else try {
      torch::serialize::InputArchive archive;
      archive.load_from(file);
      for (const auto& name : f.at("tensors")) {
        torch::Tensor t;
        archive.read(name.get<std::string>(), t);
        tensors.emplace_back(name.get<std::string>(), t);
      }
    } catch (const c10::Error& e) {
      throw InputError("checkpoint file '" + file + "' cannot be loaded: " + e.what_without_backtrace());
    }
    try {
      visit(layer, tensors);
    } catch (const c10::Error& e) {
      throw InputError("checkpoint file '" + file + "' does not fit layer " + std::to_string(layer) + ": " +
                       e.what_without_backtrace());
    } catch (const std::runtime_error& e) {
      if (dynamic_cast<const InputError*>(&e) != nullptr) throw;
      throw InputError("checkpoint file '" + file + "' does not fit layer " + std::to_string(layer) + ": " + e.what());
    }
  }
}

void load_checkpoint(const CheckpointInfo& checkpoint, const ModelConfig& model, LayerStates& states) {
  if (checkpoint.model != architecture_key(model)) {
    throw InputError("checkpoint '" + checkpoint.path + "' is of model " + checkpoint.model + ", but this run's model is " +
                     architecture_key(model));
  }
  read_checkpoint_layers(checkpoint, [&](int64_t layer, const std::vector<std::pair<std::string, torch::Tensor>>& tensors) {
    states.set_layer_state(layer, tensors);
  });
}

}  // namespace pipetrain
