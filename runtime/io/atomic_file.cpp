#include "runtime/io/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "memory/errors.h"

namespace pipetrain {

void write_file_synced(const std::string& path, const std::string& contents) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw InputError("cannot write '" + path + "': " + std::strerror(errno));
  size_t written = 0;
  while (written < contents.size()) {
    const ssize_t n = ::write(fd, contents.data() + written, contents.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string why = n < 0 ? std::strerror(errno) : "no progress";
      ::close(fd);
      throw InputError("cannot write '" + path + "' (" + std::to_string(written) + " of " +
                       std::to_string(contents.size()) + " bytes written): " + why);
    }
    written += static_cast<size_t>(n);
  }
  const int synced = ::fsync(fd);
  const int sync_errno = errno;
  if (::close(fd) != 0 || synced != 0) {
    throw InputError("cannot flush '" + path + "' to disk: " + std::strerror(synced != 0 ? sync_errno : errno));
  }
}

void write_file_atomically(const std::string& path, const std::string& contents) {
  const std::string temporary = path + ".partial";
  try {
    write_file_synced(temporary, contents);
  } catch (...) {
    ::unlink(temporary.c_str());
    throw;
  }
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(temporary.c_str());
    throw InputError("cannot move '" + temporary + "' into place at '" + path + "': " + why);
  }
}

}  // namespace pipetrain
