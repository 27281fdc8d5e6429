// runtime/profile: per-layer times measured on this machine, written as a hardware file that reads
// back the same, refused when malformed, and used by the planner.
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <regex>
#include <sstream>

#include "memory/errors.h"
#include "runtime/config/run_config.h"
#include "runtime/config/hardware_file.h"
#include "runtime/tools/calibration.h"
#include "runtime/tools/profile.h"
#include "scheduler/cost_model.h"
#include "scheduler/planner.h"
#include "test_util.h"

using namespace pipetrain;

namespace {

const std::string kBinary = PIPETRAIN_BINARY;

ModelConfig tiny_model() {
  return parse_run_config(default_config_text(), "default config",
                          {"stages=none", "model.hidden_dim=32", "model.num_layers=2", "model.num_heads=2",
                           "model.intermediate_size=64", "model.seq_len=16"})
      .model;
}

std::string profile_yaml(const std::string& times) {
  return "name: box\ndevices:\n  - {name: cpu, memory_gib: 8, flops_per_s: 1.0e10, memory_bandwidth_gb_per_s: 10, cores: 2}\n"
         "measured:\n  model: \"" + profile_key(tiny_model(), 2) + "\"\n  times:\n" + times;
}

}  // namespace

// Measuring a tiny model gives a positive time per layer for every core count asked, and the whole
// hardware description round-trips through YAML unchanged (times to the microsecond).
TEST_CASE("a measured profile round-trips through its YAML") {
  ProfileOptions options;
  options.repeats = 2;
  options.warmup = 1;
  options.core_counts = {1};
  int lines = 0;
  options.progress = [&](const std::string&) { ++lines; };
  const ModelConfig model = tiny_model();
  const HardwareSpec hw = profile_this_machine(model, 2, OptimizerConfig{}, options);
  REQUIRE(hw.measured.entries.size() == 1);
  const LayerTimes& e = hw.measured.entries[0];
  CHECK(e.cores == 1);
  CHECK(e.forward_seconds.size() == static_cast<size_t>(model.num_model_layers()));
  // A line per layer, and with cores to spare one for the alone measurement.
  const bool spare_cores = hw.cpu().cores > 1;
  CHECK(lines == model.num_model_layers() + (spare_cores ? 1 : 0));
  // Measured beside a copy on the other core, then alone: how much faster it runs alone.
  if (spare_cores) {
    CHECK(e.alone_ratio > 0.05);
    CHECK(e.alone_ratio <= 2.0);
  } else {
    CHECK(e.alone_ratio == 1.0);
  }
  for (size_t i = 0; i < e.forward_seconds.size(); ++i) {
    CHECK(e.forward_seconds[i] > 0.0);
    CHECK(e.backward_seconds[i] > 0.0);
    CHECK(e.optimizer_seconds[i] > 0.0);
  }
  CHECK(hw.measured.model_key == profile_key(model, 2));
  // The calibration workload: on all cores, and alone on each core.
  const CpuCalibration& calibration = hw.measured.calibration;
  CHECK(calibration.all_cores_seconds > 0.0);
  REQUIRE(calibration.core_seconds.size() == static_cast<size_t>(hw.cpu().cores));
  for (double t : calibration.core_seconds) CHECK(t > 0.0);
  // Rounds repeat until two agree within 3% (at most 3); the spread of their totals is recorded.
  CHECK(e.rounds >= 2);
  CHECK(e.rounds <= 3);
  CHECK(e.spread >= 0.0);
  if (e.rounds == 2) CHECK(e.spread <= options.stable_within * 1.05);  // agreed within 3% of the first; spread is over the median

  const HardwareSpec back = parse_hardware(hardware_to_yaml(hw), "round trip");
  CHECK(back.name == hw.name);
  CHECK(back.cpu().cores == hw.cpu().cores);
  CHECK(back.cpu().memory_bytes == doctest::Approx(static_cast<double>(hw.cpu().memory_bytes)).epsilon(1e-5));
  CHECK(back.cpu().flops_per_s == doctest::Approx(hw.cpu().flops_per_s).epsilon(1e-5));
  CHECK(back.measured.model_key == hw.measured.model_key);
  REQUIRE(back.measured.entries.size() == 1);
  CHECK(back.measured.entries[0].spread == doctest::Approx(e.spread).epsilon(1e-5));
  CHECK(back.measured.entries[0].rounds == e.rounds);
  CHECK(back.measured.entries[0].alone_ratio == doctest::Approx(e.alone_ratio).epsilon(1e-5));
  CHECK(back.measured.calibration.all_cores_seconds == doctest::Approx(calibration.all_cores_seconds).epsilon(1e-5));
  REQUIRE(back.measured.calibration.core_seconds.size() == calibration.core_seconds.size());
  for (size_t c = 0; c < calibration.core_seconds.size(); ++c) {
    CHECK(back.measured.calibration.core_seconds[c] == doctest::Approx(calibration.core_seconds[c]).epsilon(1e-5));
  }
  for (size_t i = 0; i < e.forward_seconds.size(); ++i) {
    CHECK(back.measured.entries[0].forward_seconds[i] == doctest::Approx(e.forward_seconds[i]).epsilon(1e-5));
    CHECK(back.measured.entries[0].backward_seconds[i] == doctest::Approx(e.backward_seconds[i]).epsilon(1e-5));
  }
  // The planner now takes its times from the measurements.
  PlanOptions o;
  o.micro_batch_size = 2;
  CHECK(StageTimer(model, back, o).uses_measured_times());
}

// Malformed measurements are refused with the key named.
TEST_CASE("a malformed profile is refused") {
  const std::string row = "[1, 2, 3, 4]";
  CHECK_NOTHROW(parse_hardware(profile_yaml("    - {device: cpu, cores: 1, forward_ms: " + row + ", backward_ms: " + row +
                                            ", optimizer_ms: " + row + "}\n"),
                               "ok.yaml"));
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"    - {device: cpu, cores: 1, forward_ms: [1, x], backward_ms: [1, 2], optimizer_ms: [1, 2]}\n",
       "measured.times[0].forward_ms[1] must be a number of milliseconds"},
      {"    - {device: cpu, cores: 1, forward_ms: 3, backward_ms: [1], optimizer_ms: [1]}\n",
       "measured.times[0].forward_ms must be a list of milliseconds"},
      {"    - {device: cpu, cores: 1, forward_ms: [1], backward_ms: [1], optimizer_ms: [1], speed: 2}\n",
       "unknown key"},
      {"    - {device: cpu, cores: 5, forward_ms: [1], backward_ms: [1], optimizer_ms: [1]}\n",
       "cores must be in [1, 2]"},
      {"    - {device: cpu, cores: 1, forward_ms: [1, 2], backward_ms: [1], optimizer_ms: [1, 2]}\n",
       "needs forward, backward and optimizer times for the same layers"},
      {"    - {device: cpu, cores: 1, forward_ms: [-1], backward_ms: [1], optimizer_ms: [1]}\n", "not a duration"},
      {"    - {device: cpu, cores: 1, forward_ms: [1], backward_ms: [1], optimizer_ms: [1], spread: -0.5}\n",
       "measured.times[0].spread must be a fraction between 0 and 100, got -0.5"},
      {"    - {device: cpu, cores: 1, forward_ms: [1], backward_ms: [1], optimizer_ms: [1], rounds: 0}\n",
       "measured.times[0].rounds must be between 1 and 1000, got 0"},
      {"    - {device: cpu, cores: 1, forward_ms: [1], backward_ms: [1], optimizer_ms: [1], alone_ratio: 0}\n",
       "measured.cpu[cores 1].alone_ratio must be in (0, 2]"},
      {"    - {device: cpu, cores: 1, forward_ms: [1], backward_ms: [1], optimizer_ms: [1]}\n"
       "  calibration: {all_cores_ms: 0, core_ms: [1, 2]}\n",
       "measured.calibration.all_cores_ms must be a time in milliseconds above 0 and at most 1e6, got 0"},
      {"    - {device: cpu, cores: 1, forward_ms: [1], backward_ms: [1], optimizer_ms: [1]}\n"
       "  calibration: {all_cores_ms: 20, core_ms: [40, -1]}\n",
       "measured.calibration.core_ms[1] must be a time in milliseconds above 0 and at most 1e6, got -1"},
      {"    - {device: cpu, cores: 1, forward_ms: [1], backward_ms: [1], optimizer_ms: [1]}\n"
       "  calibration: {all_cores_ms: 20, core_ms: 40}\n",
       "measured.calibration.core_ms must be a list of milliseconds"},
      {"    - {device: cpu, cores: 1, forward_ms: [1], backward_ms: [1], optimizer_ms: [1]}\n"
       "  calibration: {all_cores_ms: 20, core_ms: [40], gemm: 3}\n",
       "unknown key"},
  };
  for (const auto& [times, message] : cases) {
    CAPTURE(times);
    CHECK_THROWS_WITH_AS(parse_hardware(profile_yaml(times), "bad.yaml"), doctest::Contains(message.c_str()), InputError);
  }
}

// The command writes a profile that `plan --hardware` reads, and says where it wrote it.
TEST_CASE("pipetrain profile writes a hardware file plan can use") {
  testing::ScratchDir dir;
  const std::string out = dir.path() + "/profile.yaml";
  const std::string model = " --set model.hidden_dim=32 --set model.num_layers=2 --set model.num_heads=2"
                            " --set model.intermediate_size=64 --set model.seq_len=16";
  const auto r = testing::run_command(kBinary + " profile --repeats 2 --cores 1 --out " + out + model);
  CAPTURE(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("wrote " + out) != std::string::npos);
  const auto plan = testing::run_command(kBinary + " plan --auto --hardware " + out + " --set stages=none" + model);
  CAPTURE(plan.output);
  CHECK(plan.exit_code == 0);
  CHECK(plan.output.find("measured per-layer times") != std::string::npos);
  const auto bad = testing::run_command(kBinary + " profile --cores 0 --out " + out + model);
  CHECK(bad.exit_code == 2);
  CHECK(bad.output.find("cannot profile with 0 cores") != std::string::npos);
}

// The calibration's arithmetic: the workload on all cores decides when the profile recorded it, the
// GEMM rate otherwise; the cores differ when one's time is more than 10% above another's.
TEST_CASE("a calibration compares by the workload when the profile has it") {
  Calibration c;
  c.recorded_flops_per_s = 100e9;
  c.measured_flops_per_s = 98e9;
  CHECK_FALSE(c.by_workload());
  CHECK(c.change() == doctest::Approx(-0.02));
  CHECK_FALSE(c.stale());
  c.recorded.all_cores_seconds = 0.020;
  c.recorded.core_seconds = {0.040, 0.041};
  c.measured.all_cores_seconds = 0.025;  // the step's work 25% slower while the GEMM moved 2%
  c.measured.core_seconds = {0.040, 0.052};
  CHECK(c.by_workload());
  CHECK(c.change() == doctest::Approx(0.020 / 0.025 - 1.0));
  CHECK(c.stale());
  CHECK(c.time_scale() == doctest::Approx(1.25));
  CHECK(c.gemm_change() == doctest::Approx(-0.02));
  CHECK(c.recorded.core_spread() == doctest::Approx(0.041 / 0.040 - 1.0));
  CHECK(c.measured.core_spread() == doctest::Approx(0.3));
  CHECK(c.cores_differ());
  CHECK(cores_message(c).find("core 0 40.00 ms, core 1 52.00 ms (30% apart; when profiled: core 0 40.00 ms, core 1 "
                              "41.00 ms, 2% apart)") != std::string::npos);
  c.measured.core_seconds = {0.040, 0.043};
  CHECK_FALSE(c.cores_differ());
  CHECK_FALSE(c.unsteady());
  CHECK(unsteadiness_message(c.measured).empty());
  c.measured.unsteadiness = 0.5;
  CHECK(c.unsteady());
  CHECK(unsteadiness_message(c.measured).find("50% of their median apart") != std::string::npos);
  // A profile rescaled to the machine now carries the workload's times rescaled too.
  HardwareSpec hw = parse_hardware(profile_yaml("    - {device: cpu, cores: 1, forward_ms: [1, 1, 1, 1], backward_ms: [1, "
                                                "1, 1, 1], optimizer_ms: [1, 1, 1, 1]}\n"
                                                "  calibration: {all_cores_ms: 20, core_ms: [40, 41]}\n"),
                                   "box.yaml");
  const HardwareSpec slower = with_cpu_slower_by(hw, c.time_scale());
  CHECK(slower.measured.calibration.all_cores_seconds == doctest::Approx(0.025));
  CHECK(slower.measured.calibration.core_seconds[1] == doctest::Approx(0.05125));
  CHECK(slower.measured.entries[0].forward_seconds[0] == doctest::Approx(0.00125));
}

// A profile is checked against the machine before it is used: one that recorded the calibration
// workload four times as fast as this machine runs it is called stale with both figures; without
// the workload (profiles written before it), by a GEMM rate four times this machine's;
// --rescale-profile multiplies its CPU times by the ratio, and the prediction falls by about that
// factor. --rescale-profile on hardware without measured times is refused.
TEST_CASE("a stale profile is named, and --rescale-profile rescales it") {
  testing::ScratchDir dir;
  const std::string measured = dir.path() + "/profile.yaml";
  const std::string model = " --set model.hidden_dim=32 --set model.num_layers=2 --set model.num_heads=2"
                            " --set model.intermediate_size=64 --set model.seq_len=16 --set stages=none";
  REQUIRE(testing::run_command(kBinary + " profile --repeats 2 --cores 1 --out " + measured + model).exit_code == 0);
  std::ifstream in(measured);
  std::stringstream text;
  text << in.rdbuf();
  const std::string yaml = text.str();
  // The same profile, as if taken on a machine that ran the calibration workload four times as fast.
  std::smatch workload;
  REQUIRE(std::regex_search(yaml, workload, std::regex(R"(calibration: \{all_cores_ms: ([0-9.e+-]+),)")));
  const double recorded_ms = std::stod(workload[1]) / 4.0;
  const std::string faster = dir.file("faster.yaml", workload.prefix().str() + "calibration: {all_cores_ms: " +
                                                         std::to_string(recorded_ms) + "," + workload.suffix().str());
  const auto stale = testing::run_command(kBinary + " plan --auto --hardware " + faster + model);
  CAPTURE(stale.output);
  REQUIRE(stale.exit_code == 0);
  CHECK(stale.output.find("calibration: a training block (forward and backward, fixed shape) takes ") != std::string::npos);
  std::smatch figures;
  REQUIRE(std::regex_search(stale.output, figures, std::regex(R"(recorded ([0-9.]+) ms \(speed (-[0-9]+)%)")));
  CHECK(std::stod(figures[1]) == doctest::Approx(recorded_ms).epsilon(0.01));
  CHECK(std::stoi(figures[2]) <= -50);  // a quarter of the speed, give or take this machine's noise

  // Without the workload, by the GEMM rate: as if taken on a machine with four times this one's.
  std::smatch rate;
  const std::string old_yaml = std::regex_replace(yaml, std::regex("\n  calibration: [^\n]*"), "");
  REQUIRE(std::regex_search(old_yaml, rate, std::regex("\n    flops_per_s: ([0-9.e+]+)\n")));
  const double recorded = std::stod(rate[1]) * 4.0;
  const std::string faster_gemm = dir.file("faster_gemm.yaml", rate.prefix().str() + "\n    flops_per_s: " +
                                                                   std::to_string(recorded) + "\n" + rate.suffix().str());
  const auto stale_gemm = testing::run_command(kBinary + " plan --auto --hardware " + faster_gemm + model);
  CAPTURE(stale_gemm.output);
  REQUIRE(stale_gemm.exit_code == 0);
  CHECK(stale_gemm.output.find("calibration: this machine multiplies at ") != std::string::npos);
  REQUIRE(std::regex_search(stale_gemm.output, figures, std::regex(R"(recorded ([0-9.]+) \((-[0-9]+)%\))")));
  CHECK(std::stod(figures[1]) == doctest::Approx(recorded / 1e9).epsilon(0.001));
  CHECK(std::stoi(figures[2]) <= -50);

  const auto rescaled = testing::run_command(kBinary + " plan --auto --rescale-profile --hardware " + faster + model);
  CAPTURE(rescaled.output);
  REQUIRE(rescaled.exit_code == 0);
  std::smatch factor;
  REQUIRE(std::regex_search(rescaled.output, factor, std::regex(R"(CPU times were multiplied by ([0-9.]+))")));
  auto predicted = [](const std::string& output) {
    std::smatch m;
    REQUIRE(std::regex_search(output, m, std::regex(R"(predicted: ([0-9]+) tokens/s)")));
    return std::stod(m[1]);
  };
  // Compute and optimizer times are multiplied by the factor; what memory bandwidth bounds (the
  // gradient norm) is not, so the prediction falls by a little less than the factor.
  const double fall = predicted(stale.output) / predicted(rescaled.output);
  CHECK(fall <= std::stod(factor[1]) * 1.01);
  CHECK(fall >= std::stod(factor[1]) * 0.8);

  // bench with a profile measures the machine before and after the splits run, and says how far it
  // moved (every prediction error includes that).
  const std::string one = dir.file("one.yaml", "- {device: cpu, layers: [embed, head]}\n");
  const std::string out = dir.path() + "/bench";
  const auto bench = testing::run_command(kBinary + " bench --splits " + one + " --steps 1 --warmup 0 --hardware " + measured +
                                          " --out " + out + " --set data.tokenizer=bytes" + model);
  CAPTURE(bench.output);
  REQUIRE(bench.exit_code == 0);
  CHECK(bench.output.find("before the bench") != std::string::npos);
  std::ifstream bench_json(out + "/bench.json");
  const auto document = nlohmann::json::parse(bench_json);
  const auto& gemm = document["machine_gemm_flops_per_s"];
  CHECK(gemm["profile"].get<double>() == doctest::Approx(std::stod(rate[1])));
  CHECK(gemm["before"].get<double>() > 0.0);
  CHECK(gemm["moved"].get<double>() == doctest::Approx(gemm["after"].get<double>() / gemm["before"].get<double>() - 1.0));
  const auto& block = document["machine_calibration_ms"];
  CHECK(block["profile"]["all_cores"].get<double>() == doctest::Approx(std::stod(workload[1])).epsilon(1e-4));
  CHECK(block["before"]["alone_per_core"].size() == block["profile"]["alone_per_core"].size());
  CHECK(block["moved"].get<double>() == doctest::Approx(block["before"]["all_cores"].get<double>() /
                                                            block["after"]["all_cores"].get<double>() - 1.0));

  const auto preset = testing::run_command(kBinary + " plan --rescale-profile --hardware rtx2070s-wsl" + model);
  CHECK(preset.exit_code == 2);
  CHECK(preset.output.find("hardware 'rtx2070s-wsl' holds no measured times") != std::string::npos);
}

// pipetrain bench on given stage maps: a row per split, the reference and the naive baseline, CSV
// and JSON written, the verdict lines printed; bad --splits are exit 2.
TEST_CASE("pipetrain bench measures the given splits with both baselines") {
  testing::ScratchDir dir;
  const std::string data = dir.file("data.txt", testing::sample_text(200));
  const std::string one = dir.file("one.yaml", "- {device: cpu, layers: [embed, head]}\n");
  const std::string two = dir.file("two.yaml", "- {device: cpu, layers: [embed, 0], cores: 1}\n- {device: cpu, layers: [1, head], cores: 1}\n");
  const std::string model = " --set model.hidden_dim=32 --set model.num_layers=2 --set model.num_heads=2"
                            " --set model.intermediate_size=64 --set model.seq_len=16 --set train.micro_batches=4"
                            " --set data.files=[" + data + "] --set data.tokenizer=bytes --hardware rtx2070s-wsl";
  const std::string out = dir.path() + "/bench";
  const auto r = testing::run_command(kBinary + " bench --splits " + one + "," + two + " --steps 2 --warmup 1 --out " + out + model);
  CAPTURE(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("planner's choice:") != std::string::npos);
  CHECK(r.output.find("against its naive run") != std::string::npos);
  // Into a pipe, progress is plain lines: no terminal escape codes, no carriage returns.
  CHECK(r.output.find("round 1/3") != std::string::npos);
  CHECK(r.output.find('\033') == std::string::npos);
  CHECK(r.output.find('\r') == std::string::npos);
  std::ifstream csv(out + "/bench.csv");
  std::string line;
  std::vector<std::string> rows;
  while (std::getline(csv, line)) rows.push_back(line);
  REQUIRE(rows.size() >= 5);  // header, reference, two splits, naive (and the planner's choice when it is neither)
  CHECK(rows[0].rfind("kind,split,schedule,micro_batches", 0) == 0);
  CHECK(rows[1].rfind("reference,", 0) == 0);
  CHECK(rows.back().rfind("naive,", 0) == 0);
  std::ifstream json_file(out + "/bench.json");
  std::stringstream json_text;
  json_text << json_file.rdbuf();
  CHECK(json_text.str().find("\"pipelined_over_naive\"") != std::string::npos);
  // The prediction errors over the splits: the median and the worst magnitude of the split rows'.
  const auto document = nlohmann::json::parse(json_text.str());
  std::vector<double> errors;
  for (const auto& row : document["results"]) {
    if (row["kind"] == "split") errors.push_back(std::abs(row["error"].get<double>()));
  }
  REQUIRE(errors.size() >= 2);
  std::sort(errors.begin(), errors.end());
  CHECK(document["worst_abs_error"].get<double>() == doctest::Approx(errors.back()));
  const size_t mid = errors.size() / 2;
  CHECK(document["median_abs_error"].get<double>() ==
        doctest::Approx(errors.size() % 2 == 1 ? errors[mid] : 0.5 * (errors[mid - 1] + errors[mid])));
  CHECK(r.output.find("prediction error over the " + std::to_string(errors.size()) + " splits: median |error|") != std::string::npos);

  const auto bad = testing::run_command(kBinary + " bench --splits top:0 --out " + out + model);
  CHECK(bad.exit_code == 2);
  const auto missing = testing::run_command(kBinary + " bench --splits " + dir.path() + "/nope.yaml --out " + out + model);
  CHECK(missing.exit_code == 2);
  CHECK(missing.output.find("nope.yaml") != std::string::npos);
}
