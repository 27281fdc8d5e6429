// libFuzzer target: any bytes as a run config, a hardware file and a stage map. Bad input must end
// in an InputError (exit 2 in the CLI); anything else (a crash, another exception, a sanitizer
// report, a hang) is a bug the fuzzer reports with the input that caused it.
//
//   bash scripts/fuzz.sh 60     # builds with clang, seeds from configs/, fuzzes for 60 s
#include <yaml-cpp/yaml.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "memory/errors.h"
#include "runtime/config/run_config.h"
#include "runtime/config/hardware_file.h"

using namespace pipetrain;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    parse_run_config(text, "fuzz input");
  } catch (const InputError&) {
  }
  try {
    parse_hardware(text, "fuzz input");
  } catch (const InputError&) {
  }
  YAML::Node node;
  try {
    node = YAML::Load(text);
  } catch (const YAML::Exception&) {
    return 0;  // not YAML: the config and hardware parsers above already had to say so
  }
  try {
    parse_stage_map(node, ModelConfig{}, "fuzz input");
  } catch (const InputError&) {
  }
  return 0;
}
