// A run's output directory: named by date and time unless given, created with its parents, and
// never silently reused (the caller asks whether one already holds a run).
//
//   const std::string dir = given ? *given : default_run_dir();   // runs/20261201-120000
//   make_dirs(dir);                                               // InputError naming what failed
#pragma once

#include <string>

namespace pipetrain {

// "runs/<YYYYmmdd-HHMMSS>" in local time.
std::string default_run_dir();

// mkdir -p; InputError naming the directory (and the OS's reason) when it cannot be made, or when
// the path exists and is not a directory.
void make_dirs(const std::string& path);

bool path_exists(const std::string& path);

}  // namespace pipetrain
