// Writing a file so that a reader never sees half of it: write a temporary file beside it, flush it
// to disk, then rename it over the old one. Until the rename the old file stays as it was.
//
//   write_file_atomically("run/trace.json", json_text);
#pragma once

#include <string>

namespace pipetrain {

// Throws InputError naming the path (and the OS's reason) when it cannot; the old file survives.
void write_file_atomically(const std::string& path, const std::string& contents);

// Writes all of `contents` to `path` (created or truncated) and flushes it to disk, in place. An
// error is an InputError naming the file, how many bytes got there, and why ("No space left on
// device"); the partial file is left for the caller to remove.
void write_file_synced(const std::string& path, const std::string& contents);

}  // namespace pipetrain
