#include "memory/optimizer_config.h"

#include "memory/errors.h"

namespace pipetrain {
namespace {

std::vector<OptimizerDef> registered() {
  std::vector<OptimizerDef> defs;
  defs.push_back({"adamw", false, [](const OptimizerConfig&) -> int64_t { return 8; },
                  [](const OptimizerConfig&) -> std::string { return "AdamW"; },
                  [](const OptimizerConfig& base) { return std::vector<OptimizerConfig>{base}; }});
  defs.push_back({"sgd", true, [](const OptimizerConfig& c) -> int64_t { return c.momentum != 0.0 ? 4 : 0; },
                  [](const OptimizerConfig& c) -> std::string {
                    return c.momentum != 0.0 ? "SGD with momentum" : "SGD without momentum";
                  },
                  [](const OptimizerConfig& base) {
                    OptimizerConfig with = base, without = base;
                    with.momentum = 0.9;
                    without.momentum = 0.0;
                    return std::vector<OptimizerConfig>{with, without};
                  }});
  return defs;
}

const std::vector<OptimizerDef>& defs() {
  static const std::vector<OptimizerDef> all = registered();
  return all;
}

}  // namespace

OptimizerKind OptimizerKind::named(const std::string& name) {
  std::string known;
  for (size_t i = 0; i < defs().size(); ++i) {
    if (defs()[i].name == name) return OptimizerKind(static_cast<int>(i));
    known += (known.empty() ? "" : ", ") + defs()[i].name;
  }
  throw InputError("train.optimizer is '" + name + "'; expected one of " + known);
}

std::vector<OptimizerKind> OptimizerKind::all() {
  std::vector<OptimizerKind> kinds;
  for (size_t i = 0; i < defs().size(); ++i) kinds.push_back(OptimizerKind(static_cast<int>(i)));
  return kinds;
}

const OptimizerDef& OptimizerKind::def() const { return defs().at(static_cast<size_t>(index_)); }

int64_t optimizer_state_bytes_per_param(const OptimizerConfig& optimizer) {
  return optimizer.kind.def().state_bytes_per_param(optimizer);
}

std::string optimizer_label(const OptimizerConfig& optimizer) { return optimizer.kind.def().label(optimizer); }

std::vector<OptimizerConfig> optimizer_settings(const OptimizerConfig& base) {
  std::vector<OptimizerConfig> out;
  for (OptimizerKind kind : OptimizerKind::all()) {
    OptimizerConfig c = base;
    c.kind = kind;
    if (!kind.def().uses_momentum) c.momentum = 0.0;
    for (const OptimizerConfig& s : kind.def().settings(c)) out.push_back(s);
  }
  return out;
}

}  // namespace pipetrain
