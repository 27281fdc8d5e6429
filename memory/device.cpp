#include "memory/device.h"

#include "memory/errors.h"

namespace pipetrain {

bool DeviceId::has_own_memory() const {
  switch (kind) {
    case DeviceKind::kCpu: return false;
    case DeviceKind::kCuda: return true;
    case DeviceKind::kStandIn: return true;
  }
  throw std::logic_error("unknown DeviceKind");
}

std::string DeviceId::name() const {
  switch (kind) {
    case DeviceKind::kCpu: return "cpu";
    case DeviceKind::kCuda: return "cuda:" + std::to_string(index);
    case DeviceKind::kStandIn: return "standin:" + std::to_string(index);
  }
  throw std::logic_error("unknown DeviceKind");
}

DeviceId parse_device(const std::string& name) {
  if (name == "cpu") return DeviceId::cpu();
  for (const auto& [prefix, kind] : {std::pair<std::string, DeviceKind>{"cuda:", DeviceKind::kCuda},
                                     std::pair<std::string, DeviceKind>{"standin:", DeviceKind::kStandIn}}) {
    const std::string digits = name.rfind(prefix, 0) == 0 ? name.substr(prefix.size()) : "";
    if (!digits.empty() && digits.size() <= 4 && digits.find_first_not_of("0123456789") == std::string::npos) {
      return {kind, std::stoi(digits)};
    }
  }
  throw InputError("'" + name + "' is not a device; devices are cpu and cuda:N (and standin:N, a GPU's stand-in on the CPU)");
}

bool crosses_host_boundary(DeviceId a, DeviceId b) { return a.has_own_memory() != b.has_own_memory(); }

}  // namespace pipetrain
