#include "runtime/tools/report.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "memory/errors.h"
#include "memory/units.h"
#include "runtime/config/run_config.h"
#include "runtime/io/atomic_file.h"
#include "scheduler/statistics.h"

namespace pipetrain {

namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

std::string last_component(std::string dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  const auto slash = dir.find_last_of('/');
  return slash == std::string::npos ? dir : dir.substr(slash + 1);
}

RunPoint parse_point(const std::string& line) {
  const nlohmann::json j = nlohmann::json::parse(line);
  RunPoint p;
  p.step = j.at("step").get<int64_t>();
  p.loss = j.at("loss").get<double>();
  if (j.contains("val_loss")) p.val_loss = j.at("val_loss").get<double>();
  p.lr = j.at("lr").get<double>();
  p.tokens_per_s = j.at("tokens_per_s").get<double>();
  if (j.contains("bubble")) p.bubble = j.at("bubble").get<double>();
  p.peak_rss_bytes = j.at("peak_rss_bytes").get<int64_t>();
  if (j.contains("peak_vram_bytes")) p.peak_vram_bytes = j.at("peak_vram_bytes").get<int64_t>();
  p.step_seconds = j.at("step_seconds").get<double>();
  return p;
}

std::string fixed(double v, int digits) {
  char text[64];
  std::snprintf(text, sizeof(text), "%.*f", digits, v);
  return text;
}

// gnuplot reads "NaN" as a value it does not draw.
std::string or_nan(const std::optional<double>& v, int digits) { return v ? fixed(*v, digits) : "NaN"; }

std::string quoted_for_gnuplot(const std::string& text) {
  std::string out = "'";
  for (char c : text) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

}  // namespace

RunSeries read_run(const std::string& dir) {
  RunSeries run;
  run.dir = dir;
  run.label = last_component(dir);
  const RunConfig config = load_run_config_file(dir + "/config.yaml");
  run.tokens_per_step = config.train.micro_batch_size * config.train.micro_batches * config.model.seq_len;
  run.planned_steps = config.train.steps;
  const std::string path = dir + "/metrics.jsonl";
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError("'" + path + "' cannot be read (is '" + dir + "' a run directory?)");
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  size_t at = 0;
  int64_t number = 0;
  while (at < text.size()) {
    const size_t end = text.find('\n', at);
    const bool complete = end != std::string::npos;
    const std::string line = text.substr(at, complete ? end - at : std::string::npos);
    at = complete ? end + 1 : text.size();
    ++number;
    if (line.empty()) continue;
    try {
      run.points.push_back(parse_point(line));
    } catch (const nlohmann::json::exception& e) {
      if (!complete) break;  // a run still going: its newest line is being written
      throw InputError("'" + path + "' line " + std::to_string(number) + " is not a metrics record: " + e.what());
    }
  }
  return run;
}

std::string report_summary(const std::vector<RunSeries>& runs) {
  std::ostringstream out;
  for (const RunSeries& run : runs) {
    out << run.label << " (" << run.dir << "): ";
    if (run.points.empty()) {
      out << "no steps yet, of " << run.planned_steps << " planned\n";
      continue;
    }
    const RunPoint& last = run.points.back();
    double seconds = 0.0;
    std::vector<double> rates, bubbles;
    int64_t rss = 0, vram = -1;
    const RunPoint* first_val = nullptr;
    const RunPoint* best_val = nullptr;
    const RunPoint* last_val = nullptr;
    for (const RunPoint& p : run.points) {
      seconds += p.step_seconds;
      rates.push_back(p.tokens_per_s);
      if (p.bubble) bubbles.push_back(*p.bubble);
      rss = std::max(rss, p.peak_rss_bytes);
      if (p.peak_vram_bytes) vram = std::max(vram, *p.peak_vram_bytes);
      if (p.val_loss) {
        if (first_val == nullptr) first_val = &p;
        if (best_val == nullptr || *p.val_loss < *best_val->val_loss) best_val = &p;
        last_val = &p;
      }
    }
    out << "step " << last.step << " of " << run.planned_steps
        << (last.step >= run.planned_steps ? " (finished)" : " (so far: still going, or stopped)") << ", "
        << last.step * run.tokens_per_step << " tokens in " << fixed(seconds, 1) << " s of steps\n";
    out << "  training loss " << fixed(run.points.front().loss, 4) << " at step " << run.points.front().step << " -> "
        << fixed(last.loss, 4) << " at step " << last.step << "\n";
    if (first_val != nullptr) {
      out << "  validation loss " << fixed(*first_val->val_loss, 4) << " at step " << first_val->step << " -> "
          << fixed(*last_val->val_loss, 4) << " at step " << last_val->step << "; best " << fixed(*best_val->val_loss, 4)
          << " at step " << best_val->step << "\n";
    }
    out << "  tokens/s median " << fixed(median(rates), 0);
    if (!bubbles.empty()) out << "; bubble median " << fixed(median(bubbles), 3);
    out << "; peak RSS " << format_gib(rss);
    if (vram >= 0) out << "; peak VRAM " << format_gib(vram);
    out << "\n";
  }
  return out.str();
}

bool draw_report(const std::vector<RunSeries>& runs, const std::string& png_path) {
  if (std::system("command -v gnuplot > /dev/null 2>&1") != 0) return false;
  char scratch[] = "/tmp/pipetrain-report-XXXXXX";
  if (::mkdtemp(scratch) == nullptr) throw InputError("cannot make a scratch directory under /tmp for the report's data");
  const std::string dir = scratch;
  bool any_bubble = false, any_vram = false;
  // Per run: one file of steps, one of validation points (so validation draws as its own line).
  for (size_t r = 0; r < runs.size(); ++r) {
    std::ostringstream steps, val;
    for (const RunPoint& p : runs[r].points) {
      const double tokens = static_cast<double>(p.step * runs[r].tokens_per_step);
      any_bubble = any_bubble || p.bubble.has_value();
      any_vram = any_vram || p.peak_vram_bytes.has_value();
      steps << p.step << ' ' << fixed(tokens, 0) << ' ' << fixed(p.loss, 6) << ' ' << fixed(p.tokens_per_s, 2) << ' '
            << or_nan(p.bubble, 5) << ' ' << fixed(static_cast<double>(p.peak_rss_bytes) / kGiB, 4) << ' '
            << (p.peak_vram_bytes ? fixed(static_cast<double>(*p.peak_vram_bytes) / kGiB, 4) : "NaN") << ' '
            << p.lr << '\n';
      if (p.val_loss) val << p.step << ' ' << fixed(tokens, 0) << ' ' << fixed(*p.val_loss, 6) << '\n';
    }
    write_file_atomically(dir + "/steps-" + std::to_string(r) + ".dat", steps.str());
    write_file_atomically(dir + "/val-" + std::to_string(r) + ".dat", val.str() + (val.str().empty() ? "NaN NaN NaN\n" : ""));
  }
  const auto each = [&](const std::string& file, const std::string& using_, const std::string& style, const std::string& suffix) {
    std::string plot;
    for (size_t r = 0; r < runs.size(); ++r) {
      plot += (r ? ", \\\n     " : "") + quoted_for_gnuplot(dir + "/" + file + "-" + std::to_string(r) + ".dat") + " using " +
              using_ + " with " + style + " lc " + std::to_string(r + 1) + " title " + quoted_for_gnuplot(runs[r].label + suffix);
    }
    return plot;
  };
  std::ostringstream gp;
  gp << "set terminal pngcairo size 1500,900 noenhanced\nset output " << quoted_for_gnuplot(png_path) << "\n"
     << "set multiplot layout 2,3 title 'pipetrain report'\nset key top right font ',8'\nset grid\n";
  gp << "set title 'loss against step'\nset xlabel 'step'\nplot " << each("steps", "1:3", "lines", " train") << ", \\\n     "
     << each("val", "1:3", "linespoints pt 7 ps 0.6 dt 2", " val") << "\n";
  gp << "set title 'loss against tokens'\nset xlabel 'tokens'\nplot " << each("steps", "2:3", "lines", " train") << ", \\\n     "
     << each("val", "2:3", "linespoints pt 7 ps 0.6 dt 2", " val") << "\n";
  gp << "set title 'tokens/s'\nset xlabel 'step'\nset yrange [0:*]\nplot " << each("steps", "1:4", "lines", "") << "\n";
  if (any_bubble) {
    gp << "set title 'bubble (measured, fraction of the step)'\nset yrange [0:1]\nplot " << each("steps", "1:5", "lines", "") << "\n";
  } else {
    gp << "set title 'bubble: one stage, none'\nset yrange [0:1]\nplot NaN notitle\n";
  }
  gp << "set title 'peak memory (GiB)'\nset yrange [0:*]\nplot " << each("steps", "1:6", "lines", " RSS");
  if (any_vram) gp << ", \\\n     " << each("steps", "1:7", "lines dt 2", " VRAM");
  gp << "\nset title 'learning rate'\nset autoscale y\nplot " << each("steps", "1:8", "lines", "") << "\nunset multiplot\n";
  write_file_atomically(dir + "/report.gp", gp.str());
  const int rc = std::system(("gnuplot '" + dir + "/report.gp' 2> '" + dir + "/gnuplot.log'").c_str());
  std::string log;
  if (rc != 0) {
    std::ifstream in(dir + "/gnuplot.log");
    std::stringstream text;
    text << in.rdbuf();
    log = text.str();
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  if (rc != 0) throw InputError("gnuplot could not draw '" + png_path + "': " + log);
  return true;
}

}  // namespace pipetrain
