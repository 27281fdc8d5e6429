#include "runtime/io/signals.h"

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstring>

namespace pipetrain {
namespace {

std::atomic<int> g_signal{0};

void write_stderr(const char* text) {
  const ssize_t n = ::write(STDERR_FILENO, text, std::strlen(text));
  (void)n;
}

void on_signal(int signal) {
  if (g_signal.load() != 0) {
    if (signal == SIGINT) {
      write_stderr("\npipetrain: second interrupt: exiting now (the last checkpoint stays valid)\n");
      ::_exit(130);
    }
    return;
  }
  g_signal.store(signal);
  write_stderr(signal == SIGINT ? "\npipetrain: interrupt: finishing this step, then saving a checkpoint (interrupt again to exit at once)\n"
                                : "\npipetrain: terminate: finishing this step, then saving a checkpoint\n");
}

}  // namespace

void StopSignals::install() {
  struct sigaction action {};
  action.sa_handler = &on_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

bool StopSignals::requested() { return g_signal.load() != 0; }
int StopSignals::signal_number() { return g_signal.load(); }
int StopSignals::exit_status() { return 128 + g_signal.load(); }

}  // namespace pipetrain
