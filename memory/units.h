// Byte counts as people read them: every memory figure pipetrain prints is GiB with two decimals.
//
//   gib_digits(3 << 29);   // "1.50"      (table cells, where the header says GiB)
//   format_gib(3 << 29);   // "1.50 GiB"
#pragma once

#include <cstdint>
#include <string>

namespace pipetrain {

constexpr int64_t kBytesPerGiB = int64_t{1} << 30;

std::string gib_digits(int64_t bytes);
std::string format_gib(int64_t bytes);

}  // namespace pipetrain
