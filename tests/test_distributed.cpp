// Several pipetrain processes over c10d's Gloo on the loopback interface (runtime/dist/world.h):
// replicas equal one process training their global batch, a rank that dies or hangs makes the
// others exit with an error within the timeout, and what the processes disagree on is refused.
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "test_util.h"

using namespace pipetrain::testing;

namespace {

const std::string kBinary = PIPETRAIN_BINARY;
const std::string kLauncher = std::string(PIPETRAIN_SOURCE_DIR) + "/scripts/launch_local.sh";

// A TCP port free now on the loopback interface (the kernel's choice).
int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    throw std::runtime_error("cannot bind a loopback port");
  }
  close(fd);
  return ntohs(addr.sin_port);
}

// Rank `rank` of `world` as torchrun would start it, rendezvous on `port`.
std::string rank_env(int rank, int world, int port) {
  return "RANK=" + std::to_string(rank) + " WORLD_SIZE=" + std::to_string(world) + " MASTER_ADDR=127.0.0.1 MASTER_PORT=" +
         std::to_string(port) + " ";
}

std::vector<nlohmann::json> metrics_of(const std::string& run_dir) {
  std::ifstream in(run_dir + "/metrics.jsonl");
  std::vector<nlohmann::json> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

// Every step's loss and gradient norm, and each validation, of two runs: equal within `tolerance`
// (relative).
void check_same_training(const std::string& reference_dir, const std::string& run_dir, double tolerance) {
  const std::vector<nlohmann::json> a = metrics_of(reference_dir), b = metrics_of(run_dir);
  REQUIRE(a.size() == b.size());
  REQUIRE(!a.empty());
  const auto close = [&](double x, double y) { return std::abs(x - y) <= tolerance * std::max(1.0, std::abs(x)); };
  for (size_t i = 0; i < a.size(); ++i) {
    CHECK_MESSAGE(close(a[i]["loss"], b[i]["loss"]), "step " << i + 1 << " loss " << a[i]["loss"] << " vs " << b[i]["loss"]);
    CHECK_MESSAGE(close(a[i]["grad_norm"], b[i]["grad_norm"]),
                  "step " << i + 1 << " |g| " << a[i]["grad_norm"] << " vs " << b[i]["grad_norm"]);
    CHECK(a[i].contains("val_loss") == b[i].contains("val_loss"));
    if (a[i].contains("val_loss")) {
      CHECK_MESSAGE(close(a[i]["val_loss"], b[i]["val_loss"]), "step " << i + 1 << " validation, after the optimizer stepped");
    }
  }
}

struct Setup {
  ScratchDir dir;
  std::string config;
  Setup() {
    const std::string data = dir.file("text.txt", sample_text(300));
    config = dir.file("run.yaml", tiny_config_yaml(data, 2, 16));
  }
  // A hardware preset: the processes skip probing this machine (2 s each), and plan the same.
  std::string train(const std::string& args) const {
    return kBinary + " train --hardware rtx2070s-wsl --config " + config + " " + args;
  }
};

}  // namespace

// Two processes, each a copy of a two-stage pipeline on half of the global batch, equal one process
// that trains the whole batch as twice the micro-batches (1e-6); their checkpoint refuses a resume
// by one process (the global batch would change).
TEST_CASE("two replicas equal one process with twice the micro-batches") {
  Setup s;
  const std::string map = s.dir.file("two.yaml", "stages:\n  - {device: cpu, layers: [embed, 0]}\n  - {device: cpu, layers: [1, head]}\n");
  const CommandResult one = run_command(s.train("--stage-map " + map + " --steps 4 --set train.micro_batches=4 --out " + s.dir.path() + "/one"));
  REQUIRE_MESSAGE(one.exit_code == 0, one.output);
  const CommandResult two = run_command("bash " + kLauncher + " 2 " +
                                        s.train("--stage-map " + map + " --steps 4 --set train.replicas=2 --out " + s.dir.path() + "/two"));
  REQUIRE_MESSAGE(two.exit_code == 0, two.output);
  CHECK_MESSAGE(two.output.find("replicas: 2 copies of this pipeline") != std::string::npos, two.output);
  CHECK_MESSAGE(two.output.find("[rank 1] rank 1 of 2") != std::string::npos, "rank 1 says it is done: " << two.output);
  check_same_training(s.dir.path() + "/one", s.dir.path() + "/two", 1e-6);

  const CommandResult resume = run_command(kBinary + " train --resume " + s.dir.path() + "/two --steps 6 --set train.replicas=1");
  CHECK(resume.exit_code == 2);
  CHECK_MESSAGE(resume.output.find("trained 2 replica(s) of the pipeline, this one 1") != std::string::npos, resume.output);
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// A pipeline whose second stage runs on host 1 (another process) equals the same two stages in one
// process (1e-6, and the same checkpoint to the byte: host 0 writes host 1's layers as it sends
// them, in the background while the next steps exchange activations), and a resume by both
// processes from that checkpoint goes on equal to the one process's.
TEST_CASE("a pipeline across two processes equals one process, and resumes across them") {
  Setup s;
  const std::string one_host = s.dir.file("one.yaml", "stages:\n  - {device: cpu, layers: [embed, 0]}\n  - {device: cpu, layers: [1, head]}\n");
  const std::string two_hosts =
      s.dir.file("two.yaml", "stages:\n  - {device: cpu, layers: [embed, 0]}\n  - {device: cpu, layers: [1, head], host: 1}\n");
  const std::string one = s.dir.path() + "/one", two = s.dir.path() + "/two";
  CommandResult r = run_command(s.train("--stage-map " + one_host + " --steps 4 --out " + one));
  REQUIRE_MESSAGE(r.exit_code == 0, r.output);
  r = run_command("bash " + kLauncher + " 2 " +
                  s.train("--stage-map " + two_hosts + " --steps 4 --set train.checkpoint_interval=1 --set train.keep_checkpoints=4 "
                          "--set train.background_checkpoints=true --out " + two));
  REQUIRE_MESSAGE(r.exit_code == 0, r.output);
  CHECK_MESSAGE(r.output.find("stage 1: block 1..head        on cpu     ") != std::string::npos, r.output);
  CHECK_MESSAGE(r.output.find("host 1") != std::string::npos, r.output);
  check_same_training(one, two, 1e-6);
  for (const char* layer : {"layer-0000", "layer-0001", "layer-0002", "layer-0003"}) {
    const std::string file = std::string("/checkpoints/step-00000004/") + layer + ".safetensors";
    CHECK_MESSAGE(read_bytes(one + file) == read_bytes(two + file), layer << " differs");
    // Step 2's, saved while steps 3 and 4 ran, loads (verified) like any other.
    CHECK(!read_bytes(two + "/checkpoints/step-00000002/" + layer + ".safetensors").empty());
  }
  r = run_command(kBinary + " generate " + two + "/checkpoints/step-00000002 --max-tokens 4 --prompt the");
  CHECK_MESSAGE(r.exit_code == 0, r.output);
  r = run_command(kBinary + " train --hardware rtx2070s-wsl --resume " + one + " --steps 6");
  REQUIRE_MESSAGE(r.exit_code == 0, r.output);
  r = run_command("bash " + kLauncher + " 2 " + kBinary + " train --hardware rtx2070s-wsl --resume " + two + " --steps 6");
  REQUIRE_MESSAGE(r.exit_code == 0, r.output);
  check_same_training(one, two, 1e-6);
}

// Two hosts x two replicas: four processes (rank = replica x hosts + host) equal one process with
// twice the micro-batches (1e-6).
TEST_CASE("two hosts x two replicas equal one process with twice the micro-batches") {
  Setup s;
  const std::string one_host = s.dir.file("one.yaml", "stages:\n  - {device: cpu, layers: [embed, 0]}\n  - {device: cpu, layers: [1, head]}\n");
  const std::string two_hosts =
      s.dir.file("two.yaml", "stages:\n  - {device: cpu, layers: [embed, 0]}\n  - {device: cpu, layers: [1, head], host: 1}\n");
  CommandResult r = run_command(s.train("--stage-map " + one_host + " --steps 3 --set train.micro_batches=4 --out " + s.dir.path() + "/one"));
  REQUIRE_MESSAGE(r.exit_code == 0, r.output);
  r = run_command("bash " + kLauncher + " 4 " +
                  s.train("--stage-map " + two_hosts + " --steps 3 --set train.replicas=2 --out " + s.dir.path() + "/four"));
  REQUIRE_MESSAGE(r.exit_code == 0, r.output);
  CHECK_MESSAGE(r.output.find("[rank 3] rank 3 of 4") != std::string::npos, r.output);
  check_same_training(s.dir.path() + "/one", s.dir.path() + "/four", 1e-6);
}

// Three processes meeting through a file store (no address) equal one process with three times the
// micro-batches (1e-6).
TEST_CASE("three replicas over a file store equal one process with three times the micro-batches") {
  Setup s;
  const CommandResult one = run_command(s.train("--steps 3 --set train.micro_batches=6 --out " + s.dir.path() + "/one"));
  REQUIRE_MESSAGE(one.exit_code == 0, one.output);
  std::string script = "export WORLD_SIZE=3 PIPETRAIN_STORE_FILE=" + s.dir.path() + "/store; ";
  for (int r = 2; r >= 1; --r) {
    script += "RANK=" + std::to_string(r) + " " + s.train("--steps 3 --set train.replicas=3 --out " + s.dir.path() + "/three") +
              " > " + s.dir.path() + "/rank" + std::to_string(r) + ".log 2>&1 & ";
  }
  script += "RANK=0 " + s.train("--steps 3 --set train.replicas=3 --out " + s.dir.path() + "/three") + "; rc=$?; wait; exit $rc";
  const CommandResult three = run_command("bash -c '" + script + "'");
  REQUIRE_MESSAGE(three.exit_code == 0, three.output);
  check_same_training(s.dir.path() + "/one", s.dir.path() + "/three", 1e-6);
}

// A rank killed mid-run makes the other exit non-zero at its next exchange, well within the
// timeout; a rank that hangs (SIGSTOP) makes it exit once the timeout has passed.
TEST_CASE("a rank that dies or hangs makes the other exit with an error within the timeout") {
  Setup s;
  for (const std::string signal : {"KILL", "STOP"}) {
    CAPTURE(signal);
    const int port = free_port();
    const std::string out = s.dir.path() + "/run-" + signal;
    const std::string args = "--steps 100000 --dist-timeout-s 4 --set train.replicas=2 --set train.eval_interval=100000 --out " + out;
    // Rank 1 is signalled once rank 0 has written its first step; rank 0's exit is timed from then.
    const std::string script =
        rank_env(1, 2, port) + s.train(args) + " > /dev/null 2>&1 & r1=$!; " + rank_env(0, 2, port) + s.train(args) +
        " > " + out + ".log 2>&1 & r0=$!; for i in $(seq 600); do [ -s " + out + "/metrics.jsonl ] && break; sleep 0.05; done; "
        "kill -" + signal + " $r1; t0=$(date +%s.%N); wait $r0; rc=$?; t1=$(date +%s.%N); kill -KILL $r1 2>/dev/null; "
        "echo \"rc=$rc seconds=$(awk \"BEGIN { print $t1 - $t0 }\")\"; cat " + out + ".log";
    const CommandResult r = run_command("bash -c '" + script + "'");
    const size_t at = r.output.find("rc=");
    REQUIRE_MESSAGE(at != std::string::npos, r.output);
    const int rc = std::stoi(r.output.substr(at + 3));
    const double seconds = std::stod(r.output.substr(r.output.find("seconds=", at) + 8));
    CHECK_MESSAGE(rc == 1, r.output);
    CHECK_MESSAGE(r.output.find("another rank died, hung past the 4 s timeout") != std::string::npos, r.output);
    // Killed: the connection closes at once. Hung: the 4 s timeout, plus a loaded machine's slack.
    CHECK_MESSAGE(seconds < (std::string(signal) == "KILL" ? 4.0 : 4.0 + 10.0), "rank 0 took " << seconds << " s to exit");
  }
}

// What the processes cannot run together is refused, naming the values: a world size the config
// does not ask for, a rank outside the world, a replica count with one process, a missing rank
// (at the timeout), and ranks that loaded different configs.
TEST_CASE("ranks that cannot train together are refused with the values named") {
  Setup s;
  const int port = free_port();
  const std::string out = " --steps 2 --out " + s.dir.path() + "/run";
  CommandResult r = run_command(rank_env(0, 2, port) + s.train(out));
  CHECK(r.exit_code == 2);
  CHECK_MESSAGE(r.output.find("WORLD_SIZE=2 but this run needs 1 host(s) in the stage map x train.replicas 1 = 1 processes") !=
                    std::string::npos,
                r.output);
  r = run_command(rank_env(2, 2, port) + s.train(out));
  CHECK(r.exit_code == 2);
  CHECK_MESSAGE(r.output.find("RANK=2 is not below WORLD_SIZE=2") != std::string::npos, r.output);
  r = run_command(s.train("--set train.replicas=2" + out));
  CHECK(r.exit_code == 2);
  CHECK_MESSAGE(r.output.find("this run needs 1 host(s) in the stage map x train.replicas 2 = 2 processes: start them") !=
                    std::string::npos,
                r.output);
  r = run_command("WORLD_SIZE=2 RANK=1 " + s.train("--set train.replicas=2" + out));
  CHECK(r.exit_code == 2);
  CHECK_MESSAGE(r.output.find("needs a rendezvous: MASTER_ADDR and MASTER_PORT") != std::string::npos, r.output);

  r = run_command(rank_env(0, 2, port) + s.train("--dist-timeout-s 1 --set train.replicas=2" + out));
  CHECK(r.exit_code == 1);
  CHECK_MESSAGE(r.output.find("the rendezvous (waiting for all 2 ranks) failed") != std::string::npos, r.output);

  const int port2 = free_port();
  const std::string script = rank_env(1, 2, port2) + s.train("--set train.replicas=2 --set train.lr=0.5" + out + "1") +
                             " > " + s.dir.path() + "/r1.log 2>&1 & " + rank_env(0, 2, port2) +
                             s.train("--set train.replicas=2" + out + "0") + "; rc=$?; wait; exit $rc";
  r = run_command("bash -c '" + script + "'");
  CHECK(r.exit_code != 0);
  CHECK_MESSAGE(r.output.find("the ranks do not hold the same config and plan: rank 0 has fingerprint") != std::string::npos,
                r.output);
  CHECK_MESSAGE(!std::ifstream(s.dir.path() + "/run0/metrics.jsonl").good(), "nothing trained or written");
}

// scripts/launch_local.sh exits with the first failing rank's status and stops the others at once
// (rank 0 here would sleep 30 s).
TEST_CASE("the local launcher stops the other ranks when one fails") {
  const auto start = std::chrono::steady_clock::now();
  const CommandResult r =
      run_command("bash " + kLauncher + " 2 bash -c 'if [ \"$RANK\" = 1 ]; then exit 3; fi; sleep 30'");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK(r.exit_code == 3);
  CHECK_MESSAGE(r.output.find("launch_local: rank 1 exited with 3; stopping the others") != std::string::npos, r.output);
  CHECK_MESSAGE(seconds < 20.0, "the launcher took " << seconds << " s: rank 0 was not stopped");
  CHECK(run_command("bash " + kLauncher + " zero true").exit_code == 2);
}
