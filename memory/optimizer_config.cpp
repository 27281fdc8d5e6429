#include "memory/optimizer_config.h"

#include "memory/errors.h"

namespace pipetrain {
namespace {

std::vector<OptimizerDef> registered() {
  std::vector<OptimizerDef> defs;
  // LibTorch's AdamW step (torch/csrc/api/src/optim/adamw.cpp), bytes per float32 parameter:
  // decay p *= (read+write 8), m = b1 m (8) + (1-b1) g (12), v = b2 v (8) + (1-b2) g g (12),
  // sqrt(v) (8), / sqrt(bc2) (8), + eps (8), p -= step m / denom (16): 88.
  defs.push_back({"adamw", false, [](const OptimizerConfig&) { return 2; },
                  [](const OptimizerConfig&) { return 88.0; },
                  [](const OptimizerConfig&) -> std::string { return "AdamW"; },
                  [](const OptimizerConfig& base) { return std::vector<OptimizerConfig>{base}; }});
  // LibTorch's SGD: d = g + wd p (12), buf = m buf (8) + d (12) with momentum, p -= lr d (12).
  defs.push_back({"sgd", true, [](const OptimizerConfig& c) { return c.momentum != 0.0 ? 1 : 0; },
                  [](const OptimizerConfig& c) { return c.momentum != 0.0 ? 44.0 : 24.0; },
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
  return optimizer.kind.def().state_tensors(optimizer) * dtype_bytes(optimizer.state_dtype);
}

OptimizerMethod optimizer_method(const OptimizerConfig& optimizer, Dtype compute, bool home_is_cpu, bool home_is_device) {
  OptimizerMethod m;
  m.masters = is_16_bit(compute) || !home_is_device;
  m.fused = optimizer.kind == OptimizerKind::adamw() && home_is_cpu && (m.masters || compute == Dtype::kFloat32);
  m.state = m.fused ? optimizer.state_dtype : (m.masters ? Dtype::kFloat32 : compute);
  m.state_bytes_per_param = optimizer.kind.def().state_tensors(optimizer) * dtype_bytes(m.state);
  return m;
}

Dtype parse_state_dtype(const std::string& name) {
  const Dtype dtype = parse_dtype(name, "precision.moments");
  if (dtype != Dtype::kFloat32 && dtype != Dtype::kBFloat16) {
    throw InputError("precision.moments is '" + name + "'; optimizer state is float32 or bfloat16");
  }
  return dtype;
}

std::string optimizer_label(const OptimizerConfig& optimizer) {
  const std::string label = optimizer.kind.def().label(optimizer);
  const bool has_state = optimizer.kind.def().state_tensors(optimizer) > 0;
  return has_state && optimizer.state_dtype != Dtype::kFloat32 ? label + " with " + dtype_name(optimizer.state_dtype) + " state"
                                                                : label;
}

std::vector<OptimizerConfig> optimizer_settings(const OptimizerConfig& base) {
  std::vector<OptimizerConfig> out;
  for (OptimizerKind kind : OptimizerKind::all()) {
    OptimizerConfig c = base;
    c.kind = kind;
    if (!kind.def().uses_momentum) c.momentum = 0.0;
    if (!(kind == OptimizerKind::adamw())) c.state_dtype = Dtype::kFloat32;  // bfloat16 state is the fused AdamW's
    for (const OptimizerConfig& s : kind.def().settings(c)) {
      out.push_back(s);
      // The same setting with bfloat16 state, which halves it: the fused AdamW's only (optimizer_method).
      if (s.state_dtype == Dtype::kFloat32 && kind.def().state_tensors(s) > 0 && kind == OptimizerKind::adamw()) {
        OptimizerConfig half = s;
        half.state_dtype = Dtype::kBFloat16;
        out.push_back(half);
      }
    }
  }
  return out;
}

}  // namespace pipetrain
