// IEEE CRC-32 (the zlib / PNG polynomial), whole or in parts: what checkpoint manifests record
// for each file, computed as the bytes are written and checked as they are read back.
//
//   uint32_t crc = 0;
//   crc = crc32_update(crc, part1, n1);
//   crc = crc32_update(crc, part2, n2);   // == crc32 of part1 followed by part2
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace pipetrain {

// The CRC-32 of what `crc` covered followed by `size` bytes at `data` (crc 0: nothing yet).
uint32_t crc32_update(uint32_t crc, const void* data, size_t size);

inline uint32_t crc32(const std::string& bytes) { return crc32_update(0, bytes.data(), bytes.size()); }

}  // namespace pipetrain
