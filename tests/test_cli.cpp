// The pipetrain binary: help on every command, exit statuses (0 / 2), errors that name the
// problem, outputs of a real short run, and no file touched by a refused run.
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>

#include "test_util.h"

using pipetrain::testing::CommandResult;
using pipetrain::testing::run_command;
using pipetrain::testing::ScratchDir;

namespace {

const std::string kBinary = PIPETRAIN_BINARY;

CommandResult pipetrain_run(const std::string& args) { return run_command(kBinary + " " + args); }

std::string tiny_config(const std::string& data_file, const std::string& extra_model = "") {
  return "model:\n  hidden_dim: 32\n  num_layers: 1\n  num_heads: 2\n  intermediate_size: 64\n  seq_len: 32\n" +
         extra_model + "train:\n  micro_batch_size: 2\n  micro_batches: 2\n  eval_interval: 2\n  eval_batches: 1\n" +
         "data:\n  files: [" + data_file + "]\n";
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

// Every command answers --help with exit 0; no command or an unknown one is exit 2.
TEST_CASE("help and unknown commands") {
  CHECK(pipetrain_run("--help").exit_code == 0);
  const CommandResult train_help = pipetrain_run("train --help");
  CHECK(train_help.exit_code == 0);
  CHECK(train_help.output.find("--steps") != std::string::npos);
  CHECK(train_help.output.find("--set") != std::string::npos);
  CHECK(pipetrain_run("doctor --help").exit_code == 0);
  CHECK(pipetrain_run("").exit_code == 2);
  const CommandResult unknown = pipetrain_run("fly");
  CHECK(unknown.exit_code == 2);
  CHECK(unknown.output.find("unknown command 'fly'") != std::string::npos);
  const CommandResult bad_option = pipetrain_run("train --stepz 3");
  CHECK(bad_option.exit_code == 2);
  CHECK(bad_option.output.find("stepz") != std::string::npos);
}

// Each bad config is exit 2 with a message naming the key and value, and creates no output.
TEST_CASE("bad configs exit 2 with the problem named") {
  ScratchDir dir;
  const std::string data = dir.file("data.txt", pipetrain::testing::sample_text(200));
  const std::string out = dir.path() + "/out";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {tiny_config(data, "  hidden_size: 3\n"), "unknown key 'model.hidden_size'"},
      {tiny_config(data, "  vocab_size: abc\n"), "model.vocab_size must be an integer, got 'abc'"},
      {tiny_config(data, "  seq_len: 64\n"), "key 'model.seq_len' appears twice"},
      {"model:\n  num_layers: -2\n" + tiny_config(data).substr(tiny_config(data).find("train:")),
       "model.num_layers must be positive, got -2"},
      {"model:\n  hidden_dim: 30\n  num_heads: 4\n" + tiny_config(data).substr(tiny_config(data).find("train:")),
       "model.hidden_dim = 30 is not divisible by model.num_heads = 4"},
      {tiny_config(dir.path() + "/missing.txt"), "missing.txt' cannot be opened"},
      {tiny_config(dir.file("empty.txt", "")), "empty.txt' is empty"},
      {tiny_config(data) + "stages:\n  - {device: cpu, layers: [embed, 0]}\n", "the model also has head (missing)"},
      // A GPU this machine lacks: "no usable CUDA" on a CPU build, "this machine has N GPU(s)" on a GPU one.
      {tiny_config(data) + "stages:\n  - {device: cpu, layers: [embed, 0]}\n  - {device: cuda:9, layers: [head, head]}\n",
       "stage 1 is placed on cuda:9, but this"},
      {tiny_config(data) + "hardware: rtx2070s-wsl\nstages:\n  - {device: cpu, layers: [embed, 0], cores: 8}\n"
                           "  - {device: cpu, layers: [head, head]}\n",
       "stage 1 has cores: 0 (it shares the cores no stage owns), but the other cpu stages own all 8 cores"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string config = dir.file("bad" + std::to_string(i) + ".yaml", cases[i].first);
    // A preset spares each run probing this machine (2 s), except where the machine is the point:
    // a GPU it lacks.
    const bool about_this_machine = cases[i].second.find("but this") != std::string::npos;
    const CommandResult r =
        pipetrain_run("train --config " + config + " --out " + out + (about_this_machine ? "" : " --hardware rtx2070s-wsl"));
    CAPTURE(r.output);
    CHECK(r.exit_code == 2);
    CHECK(r.output.find(cases[i].second) != std::string::npos);
    CHECK_MESSAGE(!std::ifstream(out + "/metrics.jsonl").good(), "a refused run must not create outputs");
  }
  const CommandResult missing = pipetrain_run("train --config " + dir.path() + "/nope.yaml");
  CHECK(missing.exit_code == 2);
  CHECK(missing.output.find("nope.yaml' cannot be read") != std::string::npos);
  const CommandResult bad_set = pipetrain_run("train --set train.lr=-1 --out " + out);
  CHECK(bad_set.exit_code == 2);
  CHECK(bad_set.output.find("train.lr must be positive, got -1") != std::string::npos);
}

// A short run writes one JSON line per step with the promised fields, and the resolved config.
// A corpus with fewer training windows than one step takes is said, not silently repeated.
TEST_CASE("a corpus smaller than one step's batch is warned about") {
  ScratchDir dir;
  const std::string data = dir.file("data.txt", pipetrain::testing::sample_text(8));
  const std::string config = dir.file("tiny.yaml", tiny_config(data));
  const CommandResult small = pipetrain_run("train --config " + config + " --steps 1 --set train.micro_batches=16 --out " +
                                            dir.path() + "/a");
  CAPTURE(small.output);
  CHECK(small.exit_code == 0);
  CHECK(small.output.find("fewer than one step takes (32): every step repeats windows") != std::string::npos);
  const CommandResult enough = pipetrain_run("train --config " + config + " --steps 1 --out " + dir.path() + "/b");
  CHECK(enough.exit_code == 0);
  CHECK(enough.output.find("every step repeats windows") == std::string::npos);
}

TEST_CASE("train writes metrics and config, and refuses to overwrite a run") {
  ScratchDir dir;
  const std::string data = dir.file("data.txt", pipetrain::testing::sample_text(200));
  const std::string config = dir.file("tiny.yaml", tiny_config(data));
  const std::string out = dir.path() + "/run";
  const CommandResult r = pipetrain_run("train --config " + config + " --steps 3 --out " + out);
  CAPTURE(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("metrics written to " + out + "/metrics.jsonl") != std::string::npos);
  // Measured tokens/s beside the plan's prediction, and their ratio.
  std::smatch tokens;
  REQUIRE(std::regex_search(r.output, tokens,
                            std::regex(R"(tokens/s: (\d+) measured \(median\), (\d+) predicted by the plan from [^;]+; measured / predicted ([0-9.]+))")));
  const double measured = std::stod(tokens[1]), predicted = std::stod(tokens[2]);
  CHECK(measured > 0);
  CHECK(predicted > 0);
  CHECK(std::abs(std::stod(tokens[3]) - measured / predicted) <= 0.006);  // two decimals, of rounded figures
  std::ifstream metrics(out + "/metrics.jsonl");
  std::string line;
  int lines = 0;
  while (std::getline(metrics, line)) {
    const auto j = nlohmann::json::parse(line);
    ++lines;
    CHECK(j["step"] == lines);
    for (const char* key : {"loss", "lr", "tokens_per_s", "grad_norm", "peak_rss_bytes"}) {
      CHECK_MESSAGE(j.contains(key), key << " missing in " << line);
    }
    CHECK(j.contains("val_loss") == (lines == 2 || lines == 3));  // eval_interval 2, and the last step
  }
  CHECK(lines == 3);
  CHECK(read_file(out + "/config.yaml").find("num_layers: 1") != std::string::npos);

  const std::string before = read_file(out + "/metrics.jsonl");
  const CommandResult again = pipetrain_run("train --config " + config + " --steps 3 --out " + out);
  CHECK(again.exit_code == 2);
  CHECK(again.output.find("already holds a run") != std::string::npos);
  CHECK_MESSAGE(read_file(out + "/metrics.jsonl") == before, "the earlier run's metrics must survive");
}

// A stage map from a file trains through the pipeline, prints the measured bubble beside the
// simulator's, and --trace writes a Chrome trace with one track per stage and per transfer.
TEST_CASE("train with a stage map and a trace") {
  ScratchDir dir;
  const std::string data = dir.file("data.txt", pipetrain::testing::sample_text(200));
  const std::string config = dir.file("tiny.yaml", tiny_config(data));
  const std::string map = dir.file("map.yaml", "- {device: cpu, layers: [embed, embed], cores: 1}\n"
                                               "- {device: cpu, layers: [0, head]}\n");
  const std::string out = dir.path() + "/run";
  const CommandResult r = pipetrain_run("train --config " + config + " --stage-map " + map + " --steps 3 --out " + out +
                                        " --trace " + out + "/trace.json --set train.micro_batches=4 --set train.schedule=gpipe");
  CAPTURE(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("pipeline: 2 stages, gpipe, 4 micro-batches of 2") != std::string::npos);
  // Stage 1 shares the cores stage 0 does not own: "core 1" on 2 cores, "cores 1,2,..." on more.
  CHECK(r.output.find("cores: stage 0 owns core 0; stage 1 uses core") != std::string::npos);
  CHECK(r.output.find("predicted by the simulator from the measured op times") != std::string::npos);
  CHECK(read_file(out + "/config.yaml").find("stages:") != std::string::npos);
  const auto trace = nlohmann::json::parse(read_file(out + "/trace.json"));
  std::map<std::string, int> spans_per_track;
  std::map<std::pair<int, int>, std::string> track_names;
  for (const auto& e : trace["traceEvents"]) {
    if (e["ph"] == "M" && e["name"] == "thread_name") track_names[{e["pid"], e["tid"]}] = e["args"]["name"];
  }
  for (const auto& e : trace["traceEvents"]) {
    if (e["ph"] == "X" && e["pid"] == 1) ++spans_per_track[track_names[{e["pid"], e["tid"]}]];
  }
  // 3 steps x 4 micro-batches: a forward and a backward each, plus per step the stage's part of
  // the global gradient norm and its optimizer step, per stage.
  CHECK(spans_per_track["stage 0 on cpu[0]"] == 3 * (2 * 4 + 2));
  CHECK(spans_per_track["stage 1 on cpu"] == 3 * (2 * 4 + 2));
  CHECK(spans_per_track["send 0->1"] == 3 * 4);
  CHECK(spans_per_track["send 1->0"] == 3 * 4);
}

// The default model with its weights streamed (weights: cpu on cuda:0, run by --gpu-stages-on-cpu
// on the GPU's stand-in) gives the unstreamed run's losses, within 1e-5 relative: streaming is an
// execution strategy, not a change of the mathematics.
TEST_CASE("a streamed run of the default model equals the unstreamed one") {
  ScratchDir dir;
  const std::string streamed = dir.file("streamed.yaml", "- {device: cuda:0, layers: [embed, head], weights: cpu, optimizer: cpu}\n");
  const std::string resident = dir.file("resident.yaml", "- {device: cpu, layers: [embed, head]}\n");
  const std::string common = " --hardware rtx2070s-wsl --steps 4 --set train.schedule=layer-major --set train.checkpointing=true"
                             " --set train.intra_op_threads=1 --set train.eval_batches=2";
  const CommandResult a = pipetrain_run("train --stage-map " + streamed + " --gpu-stages-on-cpu --out " + dir.path() + "/s" + common);
  CAPTURE(a.output);
  REQUIRE(a.exit_code == 0);
  CHECK(a.output.find("it streams through standin:0") != std::string::npos);
  CHECK(a.output.find("on standin:0") != std::string::npos);
  const CommandResult b = pipetrain_run("train --stage-map " + resident + " --out " + dir.path() + "/r" + common);
  CAPTURE(b.output);
  REQUIRE(b.exit_code == 0);
  auto losses = [](const std::string& path) {
    std::vector<double> out;
    std::istringstream lines(read_file(path));
    for (std::string line; std::getline(lines, line);) {
      const auto record = nlohmann::json::parse(line);
      if (record.contains("loss") && record.contains("step")) out.push_back(record["loss"].get<double>());
    }
    return out;
  };
  const std::vector<double> s = losses(dir.path() + "/s/metrics.jsonl"), r = losses(dir.path() + "/r/metrics.jsonl");
  REQUIRE(s.size() == 4);
  REQUIRE(r.size() == 4);
  for (size_t i = 0; i < s.size(); ++i) CHECK(std::abs(s[i] - r[i]) <= 1e-5 * std::abs(r[i]));
  // Without --gpu-stages-on-cpu on this CPU-only build the GPU stage is refused, exit 2.
  const CommandResult refused = pipetrain_run("train --stage-map " + streamed + " --out " + dir.path() + "/x" + common);
  CHECK(refused.exit_code == 2);
}

// --auto --gpu-stages-on-cpu plans for the hardware's GPU and runs that choice here: with the GPU
// held to a few MiB past its reserve, the default model's best plan streams it through the GPU,
// and the run streams through standin:0. (Without the flag --auto plans only what this machine
// has: "train --auto, and a plan that does not fit".)
TEST_CASE("train --auto chooses a streamed stage, run on the stand-in") {
  ScratchDir dir;
  const std::string common = " --auto --hardware rtx2070s-wsl --vram-cap-gib 0.66 --steps 2 --set data.tokenizer=bytes"
                             " --set train.eval_batches=2";
  const CommandResult streamed = pipetrain_run("train --gpu-stages-on-cpu --out " + dir.path() + "/s" + common);
  CAPTURE(streamed.output);
  REQUIRE(streamed.exit_code == 0);
  CHECK(streamed.output.find("(chosen by --auto)") != std::string::npos);
  CHECK(streamed.output.find("it streams through standin:0") != std::string::npos);
  CHECK(streamed.output.find("on standin:0") != std::string::npos);
  CHECK(streamed.output.find("cores: no CPU stage") != std::string::npos);
  const std::string recorded = read_file(dir.path() + "/s/config.yaml");
  CHECK(recorded.find("weights: cpu") != std::string::npos);
  CHECK(recorded.find("window_layers:") != std::string::npos);
}

// --auto lets the planner choose; a plan that does not fit is refused with the planner's numbers
// and remedies, exit 2, before anything is allocated or written.
TEST_CASE("train --auto, and a plan that does not fit") {
  ScratchDir dir;
  const std::string data = dir.file("data.txt", pipetrain::testing::sample_text(200));
  const std::string config = dir.file("tiny.yaml", tiny_config(data));
  const CommandResult automatic = pipetrain_run("train --config " + config + " --auto --steps 2 --out " + dir.path() + "/auto");
  CAPTURE(automatic.output);
  CHECK(automatic.exit_code == 0);
  CHECK(automatic.output.find("(chosen by --auto)") != std::string::npos);

  const std::string out = dir.path() + "/huge";
  const CommandResult huge = pipetrain_run("train --config " + config + " --hardware rtx2070s-wsl --out " + out +
                                           " --set model.hidden_dim=8192 --set model.num_heads=64 --set model.num_layers=64"
                                           " --set model.intermediate_size=32768");
  CAPTURE(huge.output);
  CHECK(huge.exit_code == 2);
  CHECK(huge.output.find("does not fit") != std::string::npos);
  CHECK(huge.output.find("GiB") != std::string::npos);
  CHECK(huge.output.find("nothing was allocated") != std::string::npos);
  CHECK_MESSAGE(!std::ifstream(out + "/metrics.jsonl").good(), "a refused run must not create outputs");
}

// A run that diverges ends with one error naming the stage, op and micro-batch, exit 1, and keeps
// the metrics of the steps it finished.
TEST_CASE("a diverging run stops with the failing stage named") {
  ScratchDir dir;
  const std::string data = dir.file("data.txt", pipetrain::testing::sample_text(200));
  const std::string config = dir.file("tiny.yaml", tiny_config(data));
  const std::string out = dir.path() + "/run";
  const CommandResult r = pipetrain_run("train --config " + config + " --steps 20 --out " + out +
                                        " --set train.optimizer=sgd --set train.lr=1e6 --set train.grad_clip=0"
                                        " --set train.warmup_steps=0");
  CAPTURE(r.output);
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("error: stage 0 (cpu, embed..head) failed in forward of micro-batch 0 at step") != std::string::npos);
  CHECK(r.output.find("nan (try a lower train.lr)") != std::string::npos);
  std::ifstream metrics(out + "/metrics.jsonl");
  std::string line;
  int lines = 0;
  while (std::getline(metrics, line)) ++lines;
  CHECK(lines >= 1);
  CHECK(lines < 20);
}

// doctor reports BLAS, threads and memory, and exits 0.
TEST_CASE("doctor reports the machine") {
  const CommandResult r = pipetrain_run("doctor");
  CAPTURE(r.output);
  CHECK(r.exit_code == 0);
  for (const char* field :
       {"LibTorch", "BLAS", "matmul check", "memory triad", "training block", "threads", "RAM", "cgroup limit"}) {
    CHECK_MESSAGE(r.output.find(field) != std::string::npos, field);
  }
}
