#include "runtime/config/hardware_file.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <map>
#include <fstream>
#include <sstream>

#include "runtime/config/hardware_presets.inc"
#include "runtime/config/yaml_section.h"

namespace pipetrain {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

std::string read_text(const std::string& path, const char* what) {
  std::ifstream in(path);
  if (!in) throw InputError(std::string(what) + " '" + path + "' cannot be read (missing or no permission)");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

YAML::Node load_yaml(const std::string& text, const std::string& source) {
  try {
    return YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw InputError(source + ": not valid YAML: " + e.msg + " (line " + std::to_string(e.mark.line + 1) + ")");
  }
}

int64_t gib_to_bytes(double gib, const std::string& key, const std::string& source) {
  if (!(gib >= 0.0) || gib > 1e9) {
    std::ostringstream out;
    out << source << ": " << key << " must be a size in GiB between 0 and 1e9, got " << gib;
    throw InputError(out.str());
  }
  return static_cast<int64_t>(gib * kGiB);
}

std::vector<double> read_milliseconds(const YAML::Node& node, const std::string& key, const std::string& source) {
  if (!node || !node.IsSequence()) throw InputError(source + ": " + key + " must be a list of milliseconds");
  std::vector<double> seconds;
  for (size_t i = 0; i < node.size(); ++i) {
    try {
      seconds.push_back(node[i].as<double>() * 1e-3);
    } catch (const YAML::Exception&) {
      throw InputError(source + ": " + key + "[" + std::to_string(i) + "] must be a number of milliseconds");
    }
  }
  return seconds;
}

double positive_milliseconds(double ms, const std::string& key, const std::string& source) {
  if (!(ms > 0.0 && ms <= 1e6)) {
    std::ostringstream text;
    text << source << ": " << key << " must be a time in milliseconds above 0 and at most 1e6, got " << ms;
    throw InputError(text.str());
  }
  return ms * 1e-3;
}

// calibration: {all_cores_ms: 23.1, core_ms: [41.0, 40.2]}
CpuCalibration parse_calibration(const YAML::Node& node, const std::string& source) {
  Section c(node, "measured.calibration", source);
  double all_cores_ms = 0.0;
  c.read_number("all_cores_ms", all_cores_ms);
  c.read_node("core_ms");
  c.reject_unknown_keys();
  CpuCalibration out;
  out.all_cores_seconds = positive_milliseconds(all_cores_ms, "measured.calibration.all_cores_ms", source);
  const std::vector<double> cores = read_milliseconds(node["core_ms"], "measured.calibration.core_ms", source);
  if (cores.size() > (1u << 16)) {
    throw InputError(source + ": measured.calibration.core_ms lists " + std::to_string(cores.size()) +
                     " cores; at most 65536");
  }
  for (size_t i = 0; i < cores.size(); ++i) {
    out.core_seconds.push_back(
        positive_milliseconds(cores[i] * 1e3, "measured.calibration.core_ms[" + std::to_string(i) + "]", source));
  }
  return out;
}

// measured: {model: KEY, times: [{device, cores, forward_ms: [...], backward_ms: [...], optimizer_ms: [...],
//                                 spread (optional, 0), rounds (optional, 1)}], calibration (optional)}
MeasuredTimes parse_measured(const YAML::Node& node, const std::string& source) {
  Section m(node, "measured", source);
  MeasuredTimes out;
  m.read_string("model", out.model_key);
  m.read_node("times");
  m.read_node("calibration");
  m.reject_unknown_keys();
  if (const YAML::Node calibration = node["calibration"]) out.calibration = parse_calibration(calibration, source);
  const YAML::Node times = node["times"];
  if (!times || !times.IsSequence()) throw InputError(source + ": measured.times must be a list");
  for (size_t i = 0; i < times.size(); ++i) {
    const std::string where = "measured.times[" + std::to_string(i) + "]";
    Section t(times[i], where, source);
    LayerTimes e;
    int64_t cores = 0;
    std::string device = "cpu";
    t.read_string("device", device);
    t.read_int("cores", cores);
    t.read_node("forward_ms");
    t.read_node("backward_ms");
    t.read_node("optimizer_ms");
    double spread = 0.0;
    int64_t rounds = 1;
    t.read_number("spread", spread);
    t.read_int("rounds", rounds);
    t.read_number("alone_ratio", e.alone_ratio);
    t.reject_unknown_keys();
    if (!(spread >= 0.0 && spread <= 100.0)) {
      std::ostringstream text;
      text << source << ": " << where << ".spread must be a fraction between 0 and 100, got " << spread;
      throw InputError(text.str());
    }
    if (rounds < 1 || rounds > 1000) {
      throw InputError(source + ": " + where + ".rounds must be between 1 and 1000, got " + std::to_string(rounds));
    }
    e.spread = spread;
    e.rounds = static_cast<int>(rounds);
    e.device = parse_device_at(device, where + ".device", source);
    e.cores = static_cast<int>(std::clamp<int64_t>(cores, -1, 1 << 20));
    e.forward_seconds = read_milliseconds(times[i]["forward_ms"], where + ".forward_ms", source);
    e.backward_seconds = read_milliseconds(times[i]["backward_ms"], where + ".backward_ms", source);
    e.optimizer_seconds = read_milliseconds(times[i]["optimizer_ms"], where + ".optimizer_ms", source);
    out.entries.push_back(std::move(e));
  }
  return out;
}

// {float16: 2.0e13, bfloat16: 5.0e12}: sustained FLOP/s per dtype.
std::map<Dtype, double> parse_dtype_rates(const YAML::Node& node, const std::string& key, const std::string& source) {
  std::map<Dtype, double> rates;
  if (!node || node.IsNull()) return rates;
  if (!node.IsMap()) throw InputError(source + ": " + key + " must be a mapping like {float16: 2.0e13}");
  for (const auto& entry : node) {
    const std::string name = entry.first.IsScalar() ? entry.first.Scalar() : "?";
    Dtype dtype;
    try {
      dtype = parse_dtype(name, key);
    } catch (const InputError& e) {
      throw InputError(source + ": " + e.what());
    }
    try {
      rates[dtype] = entry.second.as<double>();
    } catch (const YAML::Exception&) {
      throw InputError(source + ": " + key + "." + name + " must be a number of FLOP/s, got " + describe(entry.second));
    }
  }
  return rates;
}

}  // namespace

DeviceId parse_device_at(const std::string& name, const std::string& key, const std::string& source) {
  try {
    return parse_device(name);
  } catch (const InputError& e) {
    throw InputError(source + ": " + key + ": " + e.what());
  }
}

std::string hardware_to_yaml(const HardwareSpec& hw) {
  YAML::Emitter out;
  out.SetDoublePrecision(6);
  out << YAML::BeginMap;
  out << YAML::Key << "name" << YAML::Value << hw.name;
  out << YAML::Key << "pinned_memory_gib" << YAML::Value << static_cast<double>(hw.pinned_bytes) / kGiB;
  out << YAML::Key << "devices" << YAML::Value << YAML::BeginSeq;
  for (const DeviceSpec& d : hw.devices) {
    out << YAML::BeginMap << YAML::Key << "name" << YAML::Value << d.name();
    out << YAML::Key << "memory_gib" << YAML::Value << static_cast<double>(d.memory_bytes) / kGiB;
    out << YAML::Key << "reserved_gib" << YAML::Value << static_cast<double>(d.reserved_bytes) / kGiB;
    out << YAML::Key << "safety_margin" << YAML::Value << d.safety_margin;
    out << YAML::Key << "allocator_slack" << YAML::Value << d.allocator_slack;
    out << YAML::Key << "flops_per_s" << YAML::Value << d.flops_per_s;
    if (!d.flops_per_s_by_dtype.empty()) {
      out << YAML::Key << "flops_per_s_by_dtype" << YAML::Value << YAML::Flow << YAML::BeginMap;
      for (const auto& [dtype, rate] : d.flops_per_s_by_dtype) out << YAML::Key << dtype_name(dtype) << YAML::Value << rate;
      out << YAML::EndMap;
    }
    out << YAML::Key << "memory_bandwidth_gb_per_s" << YAML::Value << d.memory_bytes_per_s / 1e9;
    if (d.id.is_cpu()) {
      out << YAML::Key << "single_core_flops_per_s" << YAML::Value << d.single_core_flops_per_s;
      out << YAML::Key << "cores" << YAML::Value << d.cores;
    }
    out << YAML::EndMap;
  }
  out << YAML::EndSeq;
  out << YAML::Key << "links" << YAML::Value << YAML::BeginSeq;
  for (const LinkSpec& l : hw.links) {
    out << YAML::Flow << YAML::BeginMap << YAML::Key << "from" << YAML::Value << l.from.name() << YAML::Key << "to"
        << YAML::Value << l.to.name() << YAML::Key << "bandwidth_gb_per_s" << YAML::Value << l.bytes_per_s / 1e9
        << YAML::Key << "latency_us" << YAML::Value << l.latency_s * 1e6 << YAML::EndMap;
  }
  out << YAML::EndSeq;
  if (hw.network.described()) {
    out << YAML::Key << "network" << YAML::Value << YAML::Flow << YAML::BeginMap << YAML::Key << "bandwidth_gb_per_s"
        << YAML::Value << hw.network.bytes_per_s / 1e9 << YAML::Key << "latency_us" << YAML::Value << hw.network.latency_s * 1e6
        << YAML::EndMap;
  }
  if (!hw.measured.entries.empty()) {
    out << YAML::Key << "measured" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "model" << YAML::Value << hw.measured.model_key;
    out << YAML::Key << "times" << YAML::Value << YAML::BeginSeq;
    for (const LayerTimes& e : hw.measured.entries) {
      auto ms = [](const std::vector<double>& seconds) {
        std::vector<double> v;
        for (double t : seconds) v.push_back(t * 1e3);
        return v;
      };
      out << YAML::BeginMap << YAML::Key << "device" << YAML::Value << e.device.name() << YAML::Key << "cores" << YAML::Value
          << e.cores;
      out << YAML::Key << "forward_ms" << YAML::Value << YAML::Flow << ms(e.forward_seconds);
      out << YAML::Key << "backward_ms" << YAML::Value << YAML::Flow << ms(e.backward_seconds);
      out << YAML::Key << "optimizer_ms" << YAML::Value << YAML::Flow << ms(e.optimizer_seconds);
      out << YAML::Key << "spread" << YAML::Value << e.spread << YAML::Key << "rounds" << YAML::Value << e.rounds;
      if (e.alone_ratio != 1.0) out << YAML::Key << "alone_ratio" << YAML::Value << e.alone_ratio;
      out << YAML::EndMap;
    }
    out << YAML::EndSeq;
    const CpuCalibration& c = hw.measured.calibration;
    if (c.measured()) {
      std::vector<double> core_ms;
      for (double t : c.core_seconds) core_ms.push_back(t * 1e3);
      out << YAML::Key << "calibration" << YAML::Value << YAML::Flow << YAML::BeginMap << YAML::Key << "all_cores_ms"
          << YAML::Value << c.all_cores_seconds * 1e3 << YAML::Key << "core_ms" << YAML::Value << core_ms << YAML::EndMap;
    }
    out << YAML::EndMap;
  }
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

std::vector<std::string> hardware_preset_names() {
  std::vector<std::string> names;
  for (const auto& preset : kHardwarePresets) names.push_back(preset.name);
  names.push_back("this-machine");
  return names;
}

HardwareSpec parse_hardware(const std::string& yaml_text, const std::string& source) {
  const YAML::Node root = load_yaml(yaml_text, source);
  if (!root.IsMap()) throw InputError(source + ": a hardware file is a mapping with name, devices, links");
  Section top(root, "hardware", source);
  HardwareSpec hw;
  hw.source = source;
  top.read_string("name", hw.name);
  double pinned_gib = 0.0;
  top.read_number("pinned_memory_gib", pinned_gib);
  hw.pinned_bytes = gib_to_bytes(pinned_gib, "pinned_memory_gib", source);
  top.read_node("devices");
  top.read_node("links");
  top.read_node("network");
  top.read_node("measured");
  top.reject_unknown_keys();
  if (hw.name.empty()) throw InputError(source + ": hardware needs a name");

  const YAML::Node devices = root["devices"];
  if (!devices || !devices.IsSequence() || devices.size() == 0) {
    throw InputError(source + ": devices must be a non-empty list");
  }
  for (size_t i = 0; i < devices.size(); ++i) {
    const std::string where = "devices[" + std::to_string(i) + "]";
    Section d(devices[i], where, source);
    DeviceSpec dev;
    std::string name;
    d.read_string("name", name);
    dev.id = parse_device_at(name, where + ".name", source);
    double memory_gib = 0.0, reserved_gib = 0.0;
    d.read_number("memory_gib", memory_gib);
    d.read_number("reserved_gib", reserved_gib);
    dev.memory_bytes = gib_to_bytes(memory_gib, where + ".memory_gib", source);
    dev.reserved_bytes = gib_to_bytes(reserved_gib, where + ".reserved_gib", source);
    d.read_number("safety_margin", dev.safety_margin);
    d.read_number("allocator_slack", dev.allocator_slack);
    d.read_number("flops_per_s", dev.flops_per_s);
    d.read_number("single_core_flops_per_s", dev.single_core_flops_per_s);
    double bandwidth_gb_per_s = 0.0;
    d.read_number("memory_bandwidth_gb_per_s", bandwidth_gb_per_s);
    dev.memory_bytes_per_s = bandwidth_gb_per_s * 1e9;
    int64_t cores = 0;
    d.read_int("cores", cores);
    if (cores < 0 || cores > 100000) throw InputError(source + ": " + where + ".cores = " + std::to_string(cores) + " is not a core count");
    dev.cores = static_cast<int>(cores);
    d.read_node("flops_per_s_by_dtype");
    d.reject_unknown_keys();
    dev.flops_per_s_by_dtype = parse_dtype_rates(devices[i]["flops_per_s_by_dtype"], where + ".flops_per_s_by_dtype", source);
    hw.devices.push_back(dev);
  }
  const YAML::Node links = root["links"];
  if (links && !links.IsNull()) {
    if (!links.IsSequence()) throw InputError(source + ": links must be a list");
    for (size_t i = 0; i < links.size(); ++i) {
      const std::string where = "links[" + std::to_string(i) + "]";
      Section l(links[i], where, source);
      LinkSpec link;
      double gb_per_s = 0.0, latency_us = 0.0;
      std::string from, to;
      l.read_string("from", from);
      l.read_string("to", to);
      l.read_number("bandwidth_gb_per_s", gb_per_s);
      l.read_number("latency_us", latency_us);
      l.reject_unknown_keys();
      link.from = parse_device_at(from, where + ".from", source);
      link.to = parse_device_at(to, where + ".to", source);
      link.bytes_per_s = gb_per_s * 1e9;
      link.latency_s = latency_us * 1e-6;
      hw.links.push_back(link);
    }
  }
  if (const YAML::Node network = root["network"]; network && !network.IsNull()) {
    Section n(network, "network", source);
    double gb_per_s = 0.0, latency_us = 0.0;
    n.read_number("bandwidth_gb_per_s", gb_per_s);
    n.read_number("latency_us", latency_us);
    n.reject_unknown_keys();
    if (!(gb_per_s > 0.0) || !(latency_us >= 0.0)) {
      throw InputError(source + ": network needs bandwidth_gb_per_s > 0 and latency_us >= 0, got " + std::to_string(gb_per_s) +
                       " and " + std::to_string(latency_us));
    }
    hw.network = {gb_per_s * 1e9, latency_us * 1e-6};
  }
  if (const YAML::Node measured = root["measured"]) hw.measured = parse_measured(measured, source);
  validate_hardware(hw);
  return hw;
}

HardwareSpec load_hardware_file_or_preset(const std::string& name_or_path) {
  for (const auto& preset : kHardwarePresets) {
    if (name_or_path == preset.name) return parse_hardware(preset.yaml, "preset " + std::string(preset.name));
  }
  const bool looks_like_path = name_or_path.find('/') != std::string::npos || name_or_path.find(".yaml") != std::string::npos ||
                               name_or_path.find(".yml") != std::string::npos;
  if (!looks_like_path) {
    std::string names;
    for (const std::string& n : hardware_preset_names()) names += (names.empty() ? "" : ", ") + n;
    throw InputError("hardware '" + name_or_path + "' is neither a preset (" + names + ") nor a .yaml file");
  }
  return parse_hardware(read_text(name_or_path, "hardware file"), name_or_path);
}

StageMap parse_stage_map(const YAML::Node& node, const ModelConfig& model, const std::string& source) {
  YAML::Node list = node;
  if (list.IsMap()) {
    if (!list["stages"] || list.size() != 1) throw InputError(source + ": a stage map file is a list, or a mapping with the one key 'stages'");
    list = list["stages"];
  }
  if (!list.IsSequence() || list.size() == 0) throw InputError(source + ": stages must be a non-empty list");
  StageMap map;
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string where = "stages[" + std::to_string(i) + "]";
    Section s(list[i], where, source);
    StageSpec spec;
    std::string device, weights, optimizer;
    s.read_string("device", device);
    int64_t cores = 0;
    s.read_int("cores", cores);
    if (cores < 0 || cores > 100000) throw InputError(source + ": " + where + ".cores = " + std::to_string(cores) + " is not a core count");
    spec.cores = static_cast<int>(cores);
    int64_t lanes = 1;
    s.read_int("lanes", lanes);
    if (lanes < 1 || lanes > 100000) throw InputError(source + ": " + where + ".lanes = " + std::to_string(lanes) + " is not a lane count (1 or more)");
    spec.lanes = static_cast<int>(lanes);
    int64_t host = 0;
    s.read_int("host", host);
    if (host < 0 || host >= kMaxHosts) {
      throw InputError(source + ": " + where + ".host = " + std::to_string(host) + " is not a host (0.." + std::to_string(kMaxHosts - 1) + ")");
    }
    spec.host = static_cast<int>(host);
    s.read_node("layers");
    s.read_string("weights", weights);
    s.read_string("optimizer", optimizer);
    s.reject_unknown_keys();
    const YAML::Node layers = list[i]["layers"];
    if (device.empty()) throw InputError(source + ": " + where + " needs a device");
    spec.device = parse_device_at(device, where + ".device", source);
    if (!weights.empty()) spec.weights = parse_device_at(weights, where + ".weights", source);
    if (!optimizer.empty()) spec.optimizer = parse_device_at(optimizer, where + ".optimizer", source);
    if (!layers || !layers.IsSequence() || layers.size() != 2 || !layers[0].IsScalar() || !layers[1].IsScalar()) {
      throw InputError(source + ": " + where + ".layers must be [first, last], e.g. [embed, 3] or [4, head]");
    }
    try {
      spec.first = parse_layer_ref(layers[0].Scalar(), model);
      spec.last = parse_layer_ref(layers[1].Scalar(), model);
    } catch (const InputError& e) {
      throw InputError(source + ": " + where + ".layers: " + e.what());
    }
    map.stages.push_back(spec);
  }
  return map;
}

StageMap load_stage_map_file(const std::string& path, const ModelConfig& model) {
  return parse_stage_map(load_yaml(read_text(path, "stage map"), path), model, path);
}

}  // namespace pipetrain
