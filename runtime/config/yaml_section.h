// Strict reading of one YAML mapping: typed getters whose errors name the key and the value, and
// a final check that rejects unknown and repeated keys instead of ignoring them.
//
//   Section train(root["train"], "train", "run.yaml");
//   train.read_int("steps", config.steps);
//   train.reject_unknown_keys();
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "memory/errors.h"

namespace pipetrain {

inline std::string describe(const YAML::Node& node) {
  if (node.IsScalar()) return "'" + node.Scalar() + "'";
  if (node.IsSequence()) return "a list";
  if (node.IsMap()) return "a mapping";
  return "nothing";
}

// Reads one mapping section and remembers which keys were consumed, so that the leftovers can be
// reported as unknown keys instead of being silently ignored.
class Section {
 public:
  Section(const YAML::Node& node, std::string name, std::string source)
      : node_(node), name_(std::move(name)), source_(std::move(source)) {
    if (node_ && !node_.IsNull() && !node_.IsMap()) {
      throw InputError(source_ + ": section '" + name_ + "' must be a mapping, got " + describe(node_));
    }
    // Keys are names; a list or mapping as a key (`{[a, b]: 1}`) is refused before any lookup.
    if (node_ && node_.IsMap()) {
      for (const auto& entry : node_) {
        if (!entry.first.IsScalar()) {
          throw InputError(source_ + ": section '" + name_ + "' has a key that is not a name: " + describe(entry.first));
        }
      }
    }
  }

  template <typename T>
  void read(const char* key, T& value, const char* expected) {
    seen_.insert(key);
    if (!node_ || node_.IsNull()) return;
    const YAML::Node item = node_[key];
    if (!item) return;
    if (!item.IsScalar()) throw wrong_type(key, item, expected);
    try {
      value = item.as<T>();
    } catch (const YAML::Exception&) {
      throw wrong_type(key, item, expected);
    }
  }

  void read_int(const char* key, int64_t& value) { read(key, value, "an integer"); }
  void read_number(const char* key, double& value) { read(key, value, "a number"); }
  void read_string(const char* key, std::string& value) { read(key, value, "a string"); }
  void read_bool(const char* key, bool& value) { read(key, value, "true or false"); }
  // Marks a key as known whose value the caller reads itself (a list or mapping).
  void read_node(const char* key) { seen_.insert(key); }

  void read_string_list(const char* key, std::vector<std::string>& value) {
    seen_.insert(key);
    if (!node_ || node_.IsNull()) return;
    const YAML::Node item = node_[key];
    if (!item) return;
    if (item.IsScalar()) {  // a single path is a list of one
      value = {item.Scalar()};
      return;
    }
    if (!item.IsSequence()) throw wrong_type(key, item, "a list of paths");
    value.clear();
    for (std::size_t i = 0; i < item.size(); ++i) {
      if (!item[i].IsScalar()) {
        throw InputError(source_ + ": " + name_ + "." + key + "[" + std::to_string(i) + "] must be a path, got " +
                         describe(item[i]));
      }
      value.push_back(item[i].Scalar());
    }
  }

  void reject_unknown_keys() const {
    if (!node_ || node_.IsNull()) return;
    std::set<std::string> keys;
    for (const auto& entry : node_) {
      const std::string key = entry.first.as<std::string>();
      // yaml-cpp keeps both entries of a repeated key and reads the first: say so instead.
      if (!keys.insert(key).second) {
        throw InputError(source_ + ": key '" + name_ + "." + key + "' appears twice");
      }
      if (seen_.count(key) == 0) {
        std::string known;
        for (const std::string& k : seen_) known += (known.empty() ? "" : ", ") + k;
        throw InputError(source_ + ": unknown key '" + name_ + "." + key + "'; known keys of '" + name_ +
                         "' are: " + known);
      }
    }
  }

 private:
  InputError wrong_type(const char* key, const YAML::Node& item, const char* expected) const {
    return InputError(source_ + ": " + name_ + "." + key + " must be " + expected + ", got " + describe(item));
  }

  YAML::Node node_;
  std::string name_;
  std::string source_;
  std::set<std::string> seen_;
};

}  // namespace pipetrain
