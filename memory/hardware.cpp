#include "memory/hardware.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "memory/errors.h"

namespace pipetrain {

double DeviceSpec::flops_per_s_with(int n) const {
  if (!id.is_cpu() || cores <= 1 || n <= 0 || n >= cores) return flops_per_s;
  const double one = single_core_flops_per_s > 0.0 ? single_core_flops_per_s : flops_per_s / cores;
  return one + (flops_per_s - one) * static_cast<double>(n - 1) / static_cast<double>(cores - 1);
}

double DeviceSpec::flops_per_s_for(Dtype dtype, int n) const {
  const auto it = flops_per_s_by_dtype.find(dtype);
  const double base = flops_per_s_with(n);
  if (it == flops_per_s_by_dtype.end() || dtype == Dtype::kFloat32) return base;
  return base * it->second / flops_per_s;
}

std::string DeviceSpec::flops_source(Dtype dtype) const {
  char text[96];
  const auto it = flops_per_s_by_dtype.find(dtype);
  if (dtype == Dtype::kFloat32 || it != flops_per_s_by_dtype.end()) {
    std::snprintf(text, sizeof(text), "%s %.3g FLOP/s", dtype_name(dtype).c_str(),
                  dtype == Dtype::kFloat32 ? flops_per_s : it->second);
    return text;
  }
  return dtype_name(dtype) + " at float32's rate (no " + dtype_name(dtype) + " figure)";
}

double CpuCalibration::core_spread() const {
  if (core_seconds.size() < 2) return 0.0;
  const auto [fastest, slowest] = std::minmax_element(core_seconds.begin(), core_seconds.end());
  return *slowest / *fastest - 1.0;
}

const LayerTimes* MeasuredTimes::find(DeviceId device, int cores) const {
  for (const LayerTimes& e : entries) {
    if (e.device == device && e.cores == cores) return &e;
  }
  return nullptr;
}

bool HardwareSpec::has_device(DeviceId id) const {
  for (const DeviceSpec& d : devices) {
    if (d.id == id) return true;
  }
  return false;
}

const DeviceSpec& HardwareSpec::device(DeviceId id) const {
  for (const DeviceSpec& d : devices) {
    if (d.id == id) return d;
  }
  throw InputError("device '" + id.name() + "' is not in hardware '" + name + "' (it has: " + device_names() + ")");
}

const LinkSpec* HardwareSpec::link(DeviceId from, DeviceId to) const {
  for (const LinkSpec& l : links) {
    if (l.from == from && l.to == to) return &l;
  }
  return nullptr;
}

const DeviceSpec* HardwareSpec::first_gpu() const {
  for (const DeviceSpec& d : devices) {
    if (d.id.kind == DeviceKind::kCuda) return &d;
  }
  return nullptr;
}

HardwareSpec HardwareSpec::with_stand_ins() const {
  HardwareSpec out = *this;
  for (const DeviceSpec& d : devices) {
    if (d.id.kind != DeviceKind::kCuda || out.has_device(DeviceId::stand_in(d.id.index))) continue;
    DeviceSpec stand_in = d;
    stand_in.id = DeviceId::stand_in(d.id.index);
    out.devices.push_back(stand_in);
    for (const LinkSpec& link : links) {
      if (link.from == d.id) out.links.push_back({stand_in.id, link.to, link.bytes_per_s, link.latency_s});
      if (link.to == d.id) out.links.push_back({link.from, stand_in.id, link.bytes_per_s, link.latency_s});
    }
  }
  return out;
}

std::string HardwareSpec::device_names() const {
  std::string names;
  for (const DeviceSpec& d : devices) names += (names.empty() ? "" : ", ") + d.name();
  return names;
}

void validate_hardware(const HardwareSpec& hw) {
  const std::string where = "hardware '" + hw.name + "' (" + hw.source + ")";
  auto fail = [&](const std::string& what, double value) {
    std::ostringstream out;
    out << where << ": " << what << ", got " << value;
    throw InputError(out.str());
  };
  if (hw.devices.empty()) throw InputError(where + ": no devices");
  int cpus = 0;
  for (size_t i = 0; i < hw.devices.size(); ++i) {
    const DeviceSpec& d = hw.devices[i];
    const std::string key = "devices." + d.name();
    for (size_t j = 0; j < i; ++j) {
      if (hw.devices[j].id == d.id) throw InputError(where + ": device '" + d.name() + "' appears twice");
    }
    if (d.id.is_cpu()) ++cpus;
    if (d.memory_bytes <= 0) fail(key + ".memory must be positive", static_cast<double>(d.memory_bytes));
    if (!(d.safety_margin > 0.0 && d.safety_margin <= 1.0)) fail(key + ".safety_margin must be in (0, 1]", d.safety_margin);
    if (d.reserved_bytes < 0 || d.reserved_bytes >= d.usable_bytes()) {
      fail(key + ".reserved must be >= 0 and below the usable memory", static_cast<double>(d.reserved_bytes));
    }
    if (!(d.allocator_slack >= 0.0 && d.allocator_slack < 1.0)) fail(key + ".allocator_slack must be in [0, 1)", d.allocator_slack);
    if (!(d.flops_per_s > 0.0)) fail(key + ".flops_per_s must be positive", d.flops_per_s);
    for (const auto& [dtype, rate] : d.flops_per_s_by_dtype) {
      if (!(rate > 0.0)) fail(key + ".flops_per_s_by_dtype." + dtype_name(dtype) + " must be positive", rate);
    }
    if (!(d.memory_bytes_per_s > 0.0)) {
      fail(key + ".memory_bandwidth_gb_per_s must be positive (the optimizer and the gradient norm are timed by it)",
           d.memory_bytes_per_s / 1e9);
    }
    if (d.id.is_cpu() && d.cores <= 0) fail(key + ".cores must be positive", d.cores);
    if (d.single_core_flops_per_s < 0.0 || d.single_core_flops_per_s > d.flops_per_s) {
      fail(key + ".single_core_flops_per_s must be in [0, flops_per_s]", d.single_core_flops_per_s);
    }
  }
  if (cpus != 1) throw InputError(where + ": needs exactly one device named cpu, found " + std::to_string(cpus));
  for (const LinkSpec& l : hw.links) {
    const std::string key = "links." + l.from.name() + "->" + l.to.name();
    if (!hw.has_device(l.from) || !hw.has_device(l.to)) {
      throw InputError(where + ": " + key + " names a device that is not listed (devices: " + hw.device_names() + ")");
    }
    if (!(l.bytes_per_s > 0.0)) fail(key + ".bandwidth must be positive", l.bytes_per_s);
    if (!(l.latency_s >= 0.0)) fail(key + ".latency must be >= 0", l.latency_s);
  }
  if (hw.pinned_bytes < 0) fail("pinned_memory must be >= 0", static_cast<double>(hw.pinned_bytes));
  for (const DeviceSpec& d : hw.devices) {
    if (!d.id.has_own_memory()) continue;
    if (hw.link(DeviceId::cpu(), d.id) == nullptr || hw.link(d.id, DeviceId::cpu()) == nullptr) {
      throw InputError(where + ": GPU '" + d.name() + "' needs links cpu->" + d.name() + " and " + d.name() + "->cpu");
    }
  }
  for (const LayerTimes& e : hw.measured.entries) {
    const std::string key = "measured." + e.device.name() + "[cores " + std::to_string(e.cores) + "]";
    if (!hw.has_device(e.device)) {
      throw InputError(where + ": " + key + " names a device that is not listed (devices: " + hw.device_names() + ")");
    }
    const DeviceSpec& d = hw.device(e.device);
    if (d.id.is_cpu() && (e.cores < 1 || e.cores > d.cores)) {
      fail(key + ".cores must be in [1, " + std::to_string(d.cores) + "]", e.cores);
    }
    if (e.forward_seconds.empty() || e.backward_seconds.size() != e.forward_seconds.size() ||
        e.optimizer_seconds.size() != e.forward_seconds.size()) {
      throw InputError(where + ": " + key + " needs forward, backward and optimizer times for the same layers (got " +
                       std::to_string(e.forward_seconds.size()) + ", " + std::to_string(e.backward_seconds.size()) +
                       ", " + std::to_string(e.optimizer_seconds.size()) + ")");
    }
    if (!(e.alone_ratio > 0.0 && e.alone_ratio <= 2.0)) fail(key + ".alone_ratio must be in (0, 2]", e.alone_ratio);
    for (const auto* list : {&e.forward_seconds, &e.backward_seconds, &e.optimizer_seconds}) {
      for (double t : *list) {
        if (!(t >= 0.0 && t < 1e6)) fail(key + " has a time that is not a duration in seconds", t);
      }
    }
    if (hw.measured.find(e.device, e.cores) != &e) throw InputError(where + ": " + key + " appears twice");
  }
}

HardwareSpec with_cpu_slower_by(HardwareSpec hw, double time_scale) {
  for (LayerTimes& t : hw.measured.entries) {
    if (!t.device.is_cpu()) continue;
    for (std::vector<double>* times : {&t.forward_seconds, &t.backward_seconds, &t.optimizer_seconds}) {
      for (double& x : *times) x *= time_scale;
    }
  }
  hw.measured.calibration.all_cores_seconds *= time_scale;
  for (double& x : hw.measured.calibration.core_seconds) x *= time_scale;
  for (DeviceSpec& d : hw.devices) {
    if (!d.id.is_cpu()) continue;
    d.flops_per_s /= time_scale;
    d.single_core_flops_per_s /= time_scale;
    for (auto& [dtype, rate] : d.flops_per_s_by_dtype) rate /= time_scale;
  }
  return hw;
}

}  // namespace pipetrain
