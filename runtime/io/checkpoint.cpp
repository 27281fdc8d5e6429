#include "runtime/io/checkpoint.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "memory/errors.h"
#include "runtime/io/atomic_file.h"

namespace pipetrain {
namespace {

constexpr const char* kFormat = "pipetrain-checkpoint-1";

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

}  // namespace

uint32_t crc32(const std::string& bytes) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char b : bytes) crc = table[(crc ^ b) & 0xFFu] ^ (crc >> 8);
  return crc ^ 0xFFFFFFFFu;
}

std::string save_checkpoint(const std::string& run_dir, const LayerStates& states, const RunConfig& run, int64_t step,
                            const DataPosition& data, int64_t keep, const std::map<std::string, double>& scalars) {
  const std::string dir = run_dir + "/checkpoints";
  make_dir(dir);
  const std::string final_path = dir + "/" + step_dir_name(step);
  const std::string partial = final_path + ".partial";
  remove_tree(partial);  // a save that died half-way
  make_dir(partial);

  nlohmann::json files = nlohmann::json::array();
  try {
    for (int64_t layer = 0; layer < run.model.num_model_layers(); ++layer) {
      char name[32];
      std::snprintf(name, sizeof(name), "layer-%04lld.pt", static_cast<long long>(layer));
      const std::string path = partial + "/" + name;
      torch::serialize::OutputArchive archive;
      nlohmann::json tensor_names = nlohmann::json::array();
      for (const auto& [key, tensor] : states.layer_state(layer)) {
        archive.write(key, tensor.cpu());
        tensor_names.push_back(key);
      }
      // Serialised in memory, then written here: LibTorch's file writer aborts the process when a
      // write fails (a full disk), where this names the file and the error, and the previous
      // checkpoint stays the newest.
      std::ostringstream serialised;
      archive.save_to(serialised);
      const std::string bytes = serialised.str();
      write_file_synced(path, bytes);
      files.push_back({{"name", name}, {"layer", layer}, {"bytes", bytes.size()}, {"crc32", crc32(bytes)},
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
    if (manifest.at("format").get<std::string>() != kFormat) {
      throw InputError("'" + manifest_path + "' is format " + manifest.at("format").dump() + ", not " + kFormat);
    }
    info.step = manifest.at("step").get<int64_t>();
    info.data.epoch = manifest.at("data").at("epoch").get<int64_t>();
    info.data.cursor = manifest.at("data").at("cursor").get<int64_t>();
    info.model = manifest.at("model").get<std::string>();
    info.config_yaml = manifest.at("config").get<std::string>();
    if (manifest.contains("scalars")) info.scalars = manifest.at("scalars").get<std::map<std::string, double>>();
    const int64_t layers = manifest.at("layers").get<int64_t>();
    const auto& files = manifest.at("files");
    if (static_cast<int64_t>(files.size()) != layers) {
      throw InputError("'" + manifest_path + "' lists " + std::to_string(files.size()) + " files for " +
                       std::to_string(layers) + " layers");
    }
    for (const auto& f : files) {
      const std::string file = path + "/" + f.at("name").get<std::string>();
      const std::string bytes = read_bytes(file);
      const auto size = f.at("bytes").get<uint64_t>();
      if (bytes.size() != size) {
        throw InputError("checkpoint file '" + file + "' has " + std::to_string(bytes.size()) + " bytes; the manifest says " +
                         std::to_string(size) + " (truncated or replaced)");
      }
      const auto stored = f.at("crc32").get<uint32_t>();
      const uint32_t computed = crc32(bytes);
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
    try {
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
