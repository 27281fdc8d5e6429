// What a run reports: one JSON line per step, and a progress line for the person watching.
//
// metrics.jsonl gets one object per optimizer step:
//   {"step":12,"loss":2.31,"lr":0.0018,"tokens_per_s":3400.5,"grad_norm":0.81,"peak_rss_bytes":...}
// plus "val_loss" on steps where validation ran, "peak_vram_bytes" with GPU stages, and with loss scaling "loss_scale", "skipped"
// and "skipped_steps". On a terminal the progress line rewrites itself;
// into a file or pipe it prints plain lines every log_interval steps.
#pragma once

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <optional>
#include <string>

namespace pipetrain {

struct StepRecord {
  int64_t step = 0;  // 1-based: the number of optimizer steps taken
  double loss = 0.0;
  std::optional<double> val_loss;
  double lr = 0.0;
  double tokens_per_s = 0.0;
  double grad_norm = 0.0;
  int64_t peak_rss_bytes = 0;
  std::optional<int64_t> peak_vram_bytes;  // runs with GPU stages: the largest GPU's peak reserved bytes so far
  double step_seconds = 0.0;
  std::optional<double> bubble;  // pipelined steps: measured bubble fraction (scheduler/timeline.h)
  // With loss scaling (memory/precision.h): the scale the step was taken with, whether its gradients
  // overflowed and it was skipped, and how many steps the run has skipped so far.
  std::optional<double> loss_scale;
  bool skipped = false;
  int64_t skipped_steps = 0;
};

std::string to_json_line(const StepRecord& record);

class MetricsWriter {
 public:
  // Creates (truncates) the file; throws InputError naming the path if it cannot. With
  // `resume_after_step`, keeps the lines of steps up to it and appends after them instead (a
  // resumed run: steps after its checkpoint are trained again).
  explicit MetricsWriter(const std::string& path, std::optional<int64_t> resume_after_step = std::nullopt);
  void write(const StepRecord& record);  // flushed per line: a killed run keeps what it logged
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::ofstream out_;
};

// Progress of long work (bench's rounds, ...). On a terminal the line rewrites itself in place; into
// a file or pipe it prints plain lines, the first at once and then at most one per `plain_every_s`
// seconds, and finish() prints the last one not yet printed: a log gets readable lines and no
// terminal escape codes.
//
//   StatusLine status(stderr);
//   for (...) status.show("round 2/5  ...");
//   status.finish();
class StatusLine {
 public:
  explicit StatusLine(std::FILE* stream, double plain_every_s = 10.0);
  void show(const std::string& line);
  void finish();

 private:
  std::FILE* stream_;
  bool live_;
  double plain_every_s_;
  double last_plain_s_ = -1.0;  // seconds since construction of the last plain line; < 0: none yet
  std::string pending_;         // the newest line a log has not yet had
  double start_s_;
};

class ProgressLine {
 public:
  ProgressLine(std::FILE* stream, int64_t total_steps, int64_t log_interval);
  void update(const StepRecord& record);
  void finish();

 private:
  std::FILE* stream_;
  bool live_;
  int64_t total_steps_;
  int64_t log_interval_;
  bool dirty_ = false;
  double elapsed_seconds_ = 0.0;
};

}  // namespace pipetrain
