#include "runtime/io/metrics.h"

#include <unistd.h>

#include <chrono>

#include <nlohmann/json.hpp>

#include "memory/units.h"
#include "memory/errors.h"
#include "memory/machine_probe.h"

namespace pipetrain {

std::string to_json_line(const StepRecord& r) {
  nlohmann::ordered_json line;
  line["step"] = r.step;
  line["loss"] = r.loss;
  if (r.val_loss) line["val_loss"] = *r.val_loss;
  if (r.bubble) line["bubble"] = *r.bubble;
  line["lr"] = r.lr;
  line["tokens_per_s"] = r.tokens_per_s;
  line["grad_norm"] = r.grad_norm;
  line["peak_rss_bytes"] = r.peak_rss_bytes;
  if (r.peak_vram_bytes) line["peak_vram_bytes"] = *r.peak_vram_bytes;
  line["step_seconds"] = r.step_seconds;
  if (r.loss_scale) {
    line["loss_scale"] = *r.loss_scale;
    line["skipped"] = r.skipped;
    line["skipped_steps"] = r.skipped_steps;
  }
  return line.dump();
}

namespace {

// The lines of metrics.jsonl whose step is at most `last_step` (a line that does not parse ends the
// kept part: it was being written when the run died).
std::string metrics_up_to(const std::string& path, int64_t last_step) {
  std::ifstream in(path);
  std::string kept, line;
  while (std::getline(in, line)) {
    try {
      if (nlohmann::json::parse(line).at("step").get<int64_t>() > last_step) break;
    } catch (const nlohmann::json::exception&) {
      break;
    }
    kept += line + "\n";
  }
  return kept;
}

}  // namespace

MetricsWriter::MetricsWriter(const std::string& path, std::optional<int64_t> resume_after_step) : path_(path) {
  const std::string kept = resume_after_step ? metrics_up_to(path, *resume_after_step) : std::string();
  out_.open(path, std::ios::trunc);
  if (!out_) throw InputError("cannot write metrics to '" + path + "' (is the output directory writable?)");
  out_ << kept;
  out_.flush();
}

void MetricsWriter::write(const StepRecord& record) {
  out_ << to_json_line(record) << '\n';
  out_.flush();
  if (!out_) throw std::runtime_error("writing '" + path_ + "' failed (disk full?)");
}

namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

StatusLine::StatusLine(std::FILE* stream, double plain_every_s)
    : stream_(stream), live_(isatty(fileno(stream)) != 0), plain_every_s_(plain_every_s), start_s_(now_seconds()) {}

void StatusLine::show(const std::string& line) {
  if (live_) {
    std::fprintf(stream_, "\r\033[K%s", line.c_str());
    pending_ = line;
  } else {
    const double t = now_seconds() - start_s_;
    if (last_plain_s_ >= 0 && t - last_plain_s_ < plain_every_s_) {
      pending_ = line;
      return;
    }
    std::fprintf(stream_, "%s\n", line.c_str());
    last_plain_s_ = t;
    pending_.clear();
  }
  std::fflush(stream_);
}

void StatusLine::finish() {
  if (live_ && !pending_.empty()) std::fprintf(stream_, "\r\033[K");
  if (!live_ && !pending_.empty()) std::fprintf(stream_, "%s\n", pending_.c_str());
  pending_.clear();
  std::fflush(stream_);
}

ProgressLine::ProgressLine(std::FILE* stream, int64_t total_steps, int64_t log_interval)
    : stream_(stream), live_(isatty(fileno(stream)) != 0), total_steps_(total_steps), log_interval_(log_interval) {}

void ProgressLine::update(const StepRecord& r) {
  elapsed_seconds_ += r.step_seconds;
  const bool plain_due = r.step % log_interval_ == 0 || r.step == total_steps_ || r.val_loss.has_value();
  if (!live_ && !plain_due) return;
  const double eta = r.step > 0 ? elapsed_seconds_ / static_cast<double>(r.step) * static_cast<double>(total_steps_ - r.step) : 0.0;
  char val[48] = "";
  if (r.val_loss) std::snprintf(val, sizeof(val), "  val %.4f", *r.val_loss);
  char scale[64] = "";
  if (r.loss_scale) {
    std::snprintf(scale, sizeof(scale), "  scale %.0f%s, %lld skipped", *r.loss_scale, r.skipped ? " (overflow: skipped)" : "",
                  static_cast<long long>(r.skipped_steps));
  }
  char line[320];
  std::snprintf(line, sizeof(line), "step %lld/%lld  loss %.4f%s  lr %.2e  |g| %.3f%s  %.0f tok/s  rss %s  eta %.0fs",
                static_cast<long long>(r.step), static_cast<long long>(total_steps_), r.loss, val, r.lr, r.grad_norm, scale,
                r.tokens_per_s, format_gib(r.peak_rss_bytes).c_str(), eta);
  if (live_) {
    // A validation result stays on screen; other steps overwrite each other.
    std::fprintf(stream_, "\r\033[K%s%s", line, r.val_loss ? "\n" : "");
    dirty_ = !r.val_loss;
  } else {
    std::fprintf(stream_, "%s\n", line);
  }
  std::fflush(stream_);
}

void ProgressLine::finish() {
  if (live_ && dirty_) std::fprintf(stream_, "\n");
  dirty_ = false;
  std::fflush(stream_);
}

}  // namespace pipetrain
