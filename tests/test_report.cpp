// runtime/tools/report: runs read from their metrics (a run still going as far as it got, a bad
// line named), summarised, and drawn; `pipetrain report` on real runs, one and several.
#include <doctest/doctest.h>

#include <fstream>
#include <iterator>

#include "memory/errors.h"
#include "runtime/config/run_config.h"
#include "runtime/io/metrics.h"
#include "runtime/tools/report.h"
#include "test_util.h"

using namespace pipetrain;

namespace {

// A run directory as train leaves it: config.yaml and `steps` metrics lines (validation every 2).
std::string fake_run(testing::ScratchDir& dir, const std::string& name, int steps, const std::string& tail = "") {
  const std::string run_dir = dir.path() + "/" + name;
  testing::run_command("mkdir -p " + run_dir);
  const RunConfig run = parse_run_config(default_config_text(), "default config", {"train.steps=10"});
  std::ofstream(run_dir + "/config.yaml") << to_yaml(run);
  std::ofstream metrics(run_dir + "/metrics.jsonl");
  for (int s = 1; s <= steps; ++s) {
    StepRecord r;
    r.step = s;
    r.loss = 5.0 - 0.5 * s;
    if (s % 2 == 0) r.val_loss = 5.2 - 0.4 * s + (s == 4 ? -1.0 : 0.0);
    r.lr = 1e-3;
    r.tokens_per_s = 1000.0 * s;
    r.bubble = 0.25;
    r.peak_rss_bytes = int64_t{1} << 30;
    if (name == "gpu") r.peak_vram_bytes = int64_t{3} << 30;
    r.step_seconds = 0.5;
    metrics << to_json_line(r) << '\n';
  }
  metrics << tail;
  return run_dir;
}

}  // namespace

TEST_CASE("a run's metrics are read, a half-written last line left out, a bad line named") {
  testing::ScratchDir dir;
  const RunSeries run = read_run(fake_run(dir, "a", 5, "{\"step\":6,\"lo"));
  CHECK(run.label == "a");
  CHECK(run.planned_steps == 10);
  CHECK(run.tokens_per_step == 2 * 4 * 128);  // the default config's micro-batches of 2, 4 of them, 128 tokens
  REQUIRE(run.points.size() == 5);
  CHECK(run.points[3].val_loss.value() == doctest::Approx(2.6));
  CHECK_FALSE(run.points[2].val_loss.has_value());
  CHECK(run.points[4].bubble.value() == 0.25);

  const std::string bad = fake_run(dir, "b", 3, "not json\n{\"step\":5}\n");
  CHECK_THROWS_WITH_AS(read_run(bad), doctest::Contains("line 4 is not a metrics record"), InputError);
  CHECK_THROWS_WITH_AS(read_run(dir.path() + "/nowhere"), doctest::Contains("nowhere/config.yaml"), InputError);
}

TEST_CASE("the summary gives progress, losses with the best validation, rates and memory") {
  testing::ScratchDir dir;
  const std::string summary = report_summary({read_run(fake_run(dir, "a", 5)), read_run(fake_run(dir, "gpu", 10))});
  CAPTURE(summary);
  CHECK(summary.find("a (") != std::string::npos);
  CHECK(summary.find("step 5 of 10 (so far") != std::string::npos);
  CHECK(summary.find("step 10 of 10 (finished), 10240 tokens in 5.0 s") != std::string::npos);
  CHECK(summary.find("training loss 4.5000 at step 1 -> 2.5000 at step 5") != std::string::npos);
  CHECK(summary.find("best 2.6000 at step 4") != std::string::npos);
  CHECK(summary.find("tokens/s median 3000") != std::string::npos);
  CHECK(summary.find("bubble median 0.250") != std::string::npos);
  CHECK(summary.find("peak VRAM 3.00 GiB") != std::string::npos);
}

TEST_CASE("pipetrain report draws one run and several overlaid") {
  REQUIRE_MESSAGE(testing::run_command("command -v gnuplot").exit_code == 0, "gnuplot is a dependency: bash scripts/setup.sh");
  testing::ScratchDir dir;
  const std::string data = dir.file("text.txt", testing::sample_text(300));
  const std::string config = dir.file("tiny.yaml", testing::tiny_config_yaml(data, 2, 16));
  const std::string bin = PIPETRAIN_BINARY;
  const auto trained = testing::run_command(bin + " train --config " + config + " --steps 4 --out " + dir.path() + "/one");
  REQUIRE_MESSAGE(trained.exit_code == 0, trained.output);
  testing::run_command("cp -r " + dir.path() + "/one " + dir.path() + "/two");  // a second run to overlay
  const auto one = testing::run_command(bin + " report " + dir.path() + "/one");
  CHECK_MESSAGE(one.exit_code == 0, one.output);
  CHECK(one.output.find("step 4 of 4 (finished)") != std::string::npos);
  std::ifstream png(dir.path() + "/one/report.png", std::ios::binary);
  const std::string head(std::istreambuf_iterator<char>(png), {});
  CHECK(head.substr(0, 4) == "\x89PNG");

  const auto both = testing::run_command(bin + " report " + dir.path() + "/one " + dir.path() + "/two --out " + dir.path() +
                                         "/both.png");
  CHECK_MESSAGE(both.exit_code == 0, both.output);
  CHECK(both.output.find("one (") != std::string::npos);
  CHECK(both.output.find("two (") != std::string::npos);
  CHECK(std::ifstream(dir.path() + "/both.png").good());

  const auto missing = testing::run_command(bin + " report " + dir.path() + "/three");
  CHECK(missing.exit_code == 2);
  CHECK(missing.output.find("three/config.yaml") != std::string::npos);
  CHECK(testing::run_command(bin + " report").exit_code == 2);
}
