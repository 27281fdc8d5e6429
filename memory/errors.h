// Error types shared by every layer of pipetrain.
//
// InputError is bad input from the user (a config, a stage map, a data file, a budget): the CLI
// turns it into exit status 2. Anything else that escapes is a runtime failure (exit status 1).
// Messages name the offending key and value, and may end with a hint.
#pragma once

#include <stdexcept>
#include <string>

namespace pipetrain {

class InputError : public std::runtime_error {
 public:
  explicit InputError(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace pipetrain
