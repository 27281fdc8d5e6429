#include "memory/units.h"

#include <cstdio>

namespace pipetrain {

std::string gib_digits(int64_t bytes) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%.2f", static_cast<double>(bytes) / static_cast<double>(kBytesPerGiB));
  return buffer;
}

std::string format_gib(int64_t bytes) { return gib_digits(bytes) + " GiB"; }

}  // namespace pipetrain
