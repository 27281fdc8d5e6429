// libFuzzer target: any bytes as a safetensors file (runtime/io/safetensors.h). Bad input must end
// in an InputError; a crash, another exception, a sanitizer report (an over-read above all) or a
// hang is a bug the fuzzer reports with the input that caused it. Every tensor the header accepts
// is then read from the bytes, so an accepted offset outside them would be caught here.
//
//   bash scripts/fuzz.sh 60     # builds with clang, seeds from tests/write_safetensors.py, fuzzes
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

#include "memory/errors.h"
#include "runtime/io/safetensors.h"

using namespace pipetrain;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // A copy of exactly `size` bytes on the heap, so that AddressSanitizer sees any read past them.
  std::vector<char> bytes(data, data + size);
  const std::string_view view(bytes.data(), bytes.size());
  try {
    const SafetensorsFile file = parse_safetensors(view, "fuzz input");
    std::vector<char> out;
    for (const SafetensorsTensor& t : file.tensors) {
      out.resize(t.bytes());
      if (t.bytes() > 0) std::memcpy(out.data(), bytes.data() + file.data_start + t.begin, t.bytes());
    }
  } catch (const InputError&) {
  }
  return 0;
}
