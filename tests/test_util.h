// Helpers shared by the test suites: scratch directories and files, and running the CLI.
#pragma once

#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <string>

namespace pipetrain::testing {

// A fresh directory under /tmp, removed when the object dies.
class ScratchDir {
 public:
  ScratchDir() {
    char pattern[] = "/tmp/pipetrain-test-XXXXXX";
    if (mkdtemp(pattern) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~ScratchDir() {
    // A destructor cannot throw; a leftover /tmp directory is harmless.
    if (std::system(("rm -rf '" + path_ + "'").c_str()) != 0) std::fprintf(stderr, "could not remove %s\n", path_.c_str());
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::string& path() const { return path_; }
  std::string file(const std::string& name, const std::string& contents) const {
    const std::string full = path_ + "/" + name;
    std::ofstream(full, std::ios::binary) << contents;
    return full;
  }

 private:
  std::string path_;
};

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

inline CommandResult run_command(const std::string& command) {
  CommandResult result;
  std::FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) throw std::runtime_error("popen failed for: " + command);
  char buffer[4096];
  size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) result.output.append(buffer, n);
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

struct RusageResult {
  int exit_code = -1;
  std::string output;          // stdout and stderr together
  int64_t peak_rss_bytes = 0;  // the child's peak resident set (getrusage's ru_maxrss)
};

// Runs `command` under /bin/sh and reports its peak RSS, which wait4 returns for the child alone.
inline RusageResult run_with_peak_rss(const std::string& command) {
  RusageResult result;
  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error("pipe failed");
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    dup2(fds[1], 1);
    dup2(fds[1], 2);
    close(fds[0]);
    close(fds[1]);
    execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  close(fds[1]);
  char buffer[4096];
  ssize_t n = 0;
  while ((n = read(fds[0], buffer, sizeof(buffer))) > 0) result.output.append(buffer, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  struct rusage usage {};
  if (wait4(pid, &status, 0, &usage) != pid) throw std::runtime_error("wait4 failed for: " + command);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  result.peak_rss_bytes = static_cast<int64_t>(usage.ru_maxrss) * 1024;  // Linux reports KiB
  return result;
}

// A config for a model small enough to train in a second: hidden 32, 2 heads, micro-batches of 2
// (2 of them), validation every 2 steps on one batch; `data_extra` adds lines under data:.
inline std::string tiny_config_yaml(const std::string& data_file, int num_layers, int seq_len,
                                    const std::string& data_extra = "") {
  return "model:\n  hidden_dim: 32\n  num_layers: " + std::to_string(num_layers) +
         "\n  num_heads: 2\n  intermediate_size: 64\n  seq_len: " + std::to_string(seq_len) +
         "\ntrain:\n  micro_batch_size: 2\n  micro_batches: 2\n  eval_interval: 2\n  eval_batches: 1\n"
         "data:\n  files: [" + data_file + "]\n" + data_extra;
}

// Text long enough to train on: a few kilobytes of varied English-like lines.
inline std::string sample_text(int lines) {
  std::string text;
  const char* words[] = {"the", "pipeline", "stage", "moves", "tensors", "between", "devices", "and", "memory",
                         "plans", "every", "budget", "before", "training", "starts", "on", "a", "small", "machine"};
  for (int i = 0; i < lines; ++i) {
    for (int w = 0; w < 9; ++w) text += std::string(words[(i * 7 + w * 3) % 19]) + (w == 8 ? ".\n" : " ");
  }
  return text;
}

}  // namespace pipetrain::testing
