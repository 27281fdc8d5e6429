// A look at runs rather than their JSON lines: `pipetrain report RUN [RUN...]` reads each run
// directory's metrics.jsonl and config.yaml, prints a short summary per run, and draws one PNG
// (gnuplot, as bench does) with the runs overlaid: loss against step and against tokens (training
// and validation), tokens/s, the measured bubble, peak RSS and peak VRAM, and the learning rate.
// A run still going is shown as far as it got (a last line half-written is left out).
//
//   std::vector<RunSeries> runs = {read_run("runs/a"), read_run("runs/b")};
//   std::printf("%s", report_summary(runs).c_str());
//   draw_report(runs, "report.png");
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace pipetrain {

struct RunPoint {
  int64_t step = 0;
  double loss = 0.0;
  std::optional<double> val_loss;
  double lr = 0.0;
  double tokens_per_s = 0.0;
  std::optional<double> bubble;
  int64_t peak_rss_bytes = 0;
  std::optional<int64_t> peak_vram_bytes;
  double step_seconds = 0.0;
};

struct RunSeries {
  std::string dir;
  std::string label;            // the directory's last component
  int64_t tokens_per_step = 0;  // micro_batch_size x micro_batches x seq_len, from config.yaml
  int64_t planned_steps = 0;    // train.steps
  std::vector<RunPoint> points;
};

// Reads RUN/config.yaml and RUN/metrics.jsonl. InputError naming the file when either is missing,
// or naming the line when one is not a metrics record (a half-written last line of a run still
// going is left out, not an error).
RunSeries read_run(const std::string& dir);

// A few lines per run: steps done of planned, tokens and time, first and last training loss,
// validation first, last and best, median tokens/s and bubble, peak RSS and VRAM.
std::string report_summary(const std::vector<RunSeries>& runs);

// Draws the runs into `png_path` with gnuplot. Returns false (drawing nothing) when gnuplot is not
// installed; InputError when the PNG cannot be written.
bool draw_report(const std::vector<RunSeries>& runs, const std::string& png_path);

}  // namespace pipetrain
