// runtime/config: the default config parses; every bad key, type or size is an InputError that
// names the key and the value; overrides go through the same checks.
#include <doctest/doctest.h>

#include "memory/errors.h"
#include "runtime/config/run_config.h"
#include "test_util.h"

using namespace pipetrain;

namespace {

const char* kMinimal = "data:\n  files: [/usr/share/common-licenses/GPL-3]\n";

RunConfig parse(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  return parse_run_config(yaml, "test.yaml", overrides);
}

void check_rejected(const std::string& yaml, const std::string& must_mention) {
  CAPTURE(yaml);
  CHECK_THROWS_WITH_AS(parse(yaml), doctest::Contains(must_mention.c_str()), InputError);
}

}  // namespace

// The embedded default config is valid and is the model of about 1-5 M parameters the README promises.
TEST_CASE("the default config parses") {
  const RunConfig run = parse_run_config(default_config_text(), "default config");
  // 2,000 subword pieces trained on the licences at first use: the vocabulary is known before.
  CHECK(run.data.tokenizer == "auto:2000");
  CHECK(run.model.vocab_size == 2000);
  CHECK(run.model.hidden_dim % run.model.num_heads == 0);
  CHECK(run.train.optimizer.kind == OptimizerKind::adamw());
  CHECK(!run.data.files.empty());
}

// Keys that are not given take the documented defaults; given keys are read with their types.
TEST_CASE("keys are read with their types") {
  const RunConfig run = parse(std::string(kMinimal) +
                              "model:\n  hidden_dim: 64\n  num_heads: 8\n  dtype: float64\n"
                              "train:\n  optimizer: sgd\n  momentum: 0.9\n  lr: 0.5\n  steps: 7\n");
  CHECK(run.model.hidden_dim == 64);
  CHECK(run.model.num_heads == 8);
  CHECK(run.model.dtype == Dtype::kFloat64);
  CHECK(run.train.optimizer.kind == OptimizerKind::sgd());
  CHECK(run.train.optimizer.momentum == 0.9);
  CHECK(run.train.optimizer.lr == 0.5);
  CHECK(run.train.steps == 7);
  CHECK(run.data.files.size() == 1);
}

// Each bad config of the foundation issue is refused with a message naming the problem.
TEST_CASE("bad configs are refused with the key and value named") {
  const std::string data = kMinimal;
  check_rejected(data + "model:\n  hidden_size: 64\n", "unknown key 'model.hidden_size'");
  check_rejected(data + "optimiser:\n  lr: 1\n", "unknown section 'optimiser'");
  check_rejected(data + "model:\n  hidden_dim: sixty\n", "model.hidden_dim must be an integer, got 'sixty'");
  check_rejected(data + "model:\n  num_layers: 2.5\n", "model.num_layers must be an integer, got '2.5'");
  check_rejected(data + "model:\n  num_layers: 0\n", "model.num_layers must be positive, got 0");
  check_rejected(data + "model:\n  seq_len: -4\n", "model.seq_len must be positive, got -4");
  check_rejected(data + "model:\n  hidden_dim: 100\n  num_heads: 3\n",
                 "model.hidden_dim = 100 is not divisible by model.num_heads = 3");
  check_rejected(data + "model:\n  hidden_dim: 99999999999\n", "model.hidden_dim = 99999999999 is larger than");
  check_rejected(data + "model:\n  vocab_size: 100\n", "model.vocab_size = 100 is too small");
  check_rejected(data + "model:\n  dtype: int8\n", "model.dtype is 'int8'");
  check_rejected(data + "train:\n  eps: 0\n", "train.eps must be positive, got 0");
  check_rejected(data + "train:\n  lr: -0.1\n", "train.lr must be positive, got -0.1");
  check_rejected(data + "train:\n  optimizer: adam\n", "train.optimizer is 'adam'");
  check_rejected(data + "train:\n  micro_batches: 0\n", "train.micro_batches must be positive, got 0");
  check_rejected(data + "train:\n  window_layers: 0\n", "train.window_layers must be in [1, 64] (a streamed stage's GPU window, in layers), got 0");
  check_rejected(data + "train:\n  window_layers: 65\n", "got 65");
  check_rejected(data + "train:\n  replicas: 0\n", "train.replicas must be in [1, 4096] (copies of the pipeline, one per group of processes), got 0");
  check_rejected(data + "train:\n  replicas: 4000\n  micro_batches: 65536\n  micro_batch_size: 64\n", "the global batch of train.replicas = 4000 steps of");
  // Sizes that would overflow an int where micro-batches or a step's tokens are counted.
  check_rejected(data + "train:\n  micro_batches: 70000\n", "train.micro_batches = 70000 is larger than the limit 65536");
  check_rejected(data + "train:\n  micro_batch_size: 5000000\n", "train.micro_batch_size = 5000000 is larger than");
  check_rejected(data + "model:\n  seq_len: 65536\ntrain:\n  micro_batch_size: 1024\n  micro_batches: 64\n",
                 "is 4295032832 tokens, over the limit 2147483647");
  check_rejected(data + "train:\n  eval_batches: 100000\n", "train.eval_batches = 100000 is larger than the limit");
  check_rejected(data + "train:\n  beta2: 1.5\n", "train.beta2 must be in [0, 1), got 1.5");
  check_rejected(data + "train:\n  momentum: 0.9\n", "train.momentum is not used by train.optimizer: adamw (only by sgd)");
  check_rejected(data + "train:\n  steps: [1, 2]\n", "train.steps must be an integer, got a list");
  // A model alone is a config: planning reads no data (the corpus refuses no files when it is read).
  CHECK(parse("model:\n  hidden_dim: 64\n  num_heads: 2\n", {}).data.files.empty());
  check_rejected(data + "  val_fraction: 1.5\n", "data.val_fraction must be in (0, 1), got 1.5");
  check_rejected("model: [1, 2]\n" + data, "section 'model' must be a mapping");
  check_rejected("model:\n  hidden_dim: [\n", "not valid YAML");
  check_rejected("- just\n- a list\n", "top level must be a mapping");
  check_rejected(data + "train:\n  steps: 5\n  steps: 6\n", "key 'train.steps' appears twice");
}

// Overrides replace single keys and are validated like the file.
TEST_CASE("command-line overrides") {
  const RunConfig run = parse(kMinimal, {"train.steps=12", "model.num_layers=3", "train.optimizer=sgd"});
  CHECK(run.train.steps == 12);
  CHECK(run.model.num_layers == 3);
  CHECK(run.train.optimizer.kind == OptimizerKind::sgd());
  CHECK_THROWS_WITH_AS(parse(kMinimal, {"train.steps"}), doctest::Contains("section.key=value"), InputError);
  CHECK_THROWS_WITH_AS(parse(kMinimal, {"steps=3"}), doctest::Contains("section.key=value"), InputError);
  CHECK_THROWS_WITH_AS(parse(kMinimal, {"train.stepz=3"}), doctest::Contains("unknown key 'train.stepz'"), InputError);
  CHECK_THROWS_WITH_AS(parse(kMinimal, {"train.steps=-3"}), doctest::Contains("train.steps must be positive, got -3"),
                       InputError);
}

// The resolved config written beside a run parses back to the same values.
TEST_CASE("to_yaml round-trips") {
  const RunConfig run = parse(kMinimal, {"train.lr=0.00125", "model.num_layers=5", "train.optimizer=sgd",
                                         "train.momentum=0.5"});
  const RunConfig again = parse(to_yaml(run));
  CHECK(again.train.optimizer.lr == run.train.optimizer.lr);
  CHECK(again.train.optimizer.momentum == 0.5);
  CHECK(again.model.num_layers == 5);
  CHECK(again.data.files == run.data.files);
  CHECK(to_yaml(again) == to_yaml(run));
}

// precision: a compute dtype per device kind (model.dtype by default), the moments' dtype, and
// loss scaling, which float16 turns on by itself and cannot run without.
TEST_CASE("the precision section") {
  const RunConfig plain = parse(kMinimal);
  CHECK(plain.precision.cpu == Dtype::kFloat32);
  CHECK(plain.precision.cuda == Dtype::kFloat32);
  CHECK(plain.precision.loss_scaling == LossScaling::kNone);
  CHECK(plain.train.optimizer.state_dtype == Dtype::kFloat32);

  const RunConfig mixed = parse(std::string(kMinimal) + "precision:\n  cuda: float16\n  moments: bfloat16\n");
  CHECK(mixed.precision.cpu == Dtype::kFloat32);
  CHECK(mixed.precision.cuda == Dtype::kFloat16);
  CHECK(mixed.precision.loss_scaling == LossScaling::kDynamic);
  CHECK(mixed.train.optimizer.state_dtype == Dtype::kBFloat16);
  const RunConfig again = parse(to_yaml(mixed));
  CHECK(again.precision.cuda == Dtype::kFloat16);
  CHECK(again.train.optimizer.state_dtype == Dtype::kBFloat16);
  CHECK(to_yaml(again) == to_yaml(mixed));

  // model.dtype sets both devices' compute dtype; float16 there brings loss scaling with it.
  const RunConfig half = parse(std::string(kMinimal) + "model:\n  dtype: float16\n");
  CHECK(half.precision.cpu == Dtype::kFloat16);
  CHECK(half.precision.cuda == Dtype::kFloat16);
  CHECK(half.precision.loss_scaling == LossScaling::kDynamic);

  const std::string data = kMinimal;
  check_rejected(data + "precision:\n  cuda: float16\n  loss_scaling: none\n", "float16 with loss_scaling: none");
  check_rejected(data + "precision:\n  cpu: int4\n", "precision.cpu is 'int4'");
  check_rejected(data + "precision:\n  moments: float16\n", "moments");
  // SGD's momentum stays float32: bfloat16 moments with it would be a setting that does nothing.
  check_rejected(data + "train:\n  optimizer: sgd\nprecision:\n  moments: bfloat16\n",
                 "precision.moments is bfloat16, but train.optimizer is sgd: only AdamW keeps its state in bfloat16");
  check_rejected(data + "precision:\n  loss_scaling: static\n", "loss_scaling");
  check_rejected(data + "precision:\n  initial_loss_scale: 0.5\n", "precision.initial_loss_scale must be in [1, 1e30], got 0.5");
  check_rejected(data + "precision:\n  loss_scale_growth_interval: 0\n",
                 "precision.loss_scale_growth_interval must be positive, got 0");
  check_rejected(data + "precision:\n  fp16: true\n", "unknown key 'precision.fp16'");
}

// A config file that does not exist is named in the error.
TEST_CASE("missing config file") {
  CHECK_THROWS_WITH_AS(load_run_config_file("/nonexistent/run.yaml"), doctest::Contains("'/nonexistent/run.yaml'"),
                       InputError);
}

// Found by the fuzzer (scripts/fuzz.sh): a list or mapping used as a key is an InputError naming
// it, not a yaml-cpp conversion exception (which the CLI would report as a crash, exit 1).
TEST_CASE("keys that are not names are refused") {
  CHECK_THROWS_WITH_AS(parse_run_config("[a, b]: 1\n", "k.yaml"), doctest::Contains("a section name must be a name"),
                       InputError);
  CHECK_THROWS_WITH_AS(parse_run_config("model: {[x]: 1}\n", "k.yaml"),
                       doctest::Contains("section 'model' has a key that is not a name"), InputError);
  CHECK_THROWS_WITH_AS(parse_run_config("data: {files: [/etc/hostname]}\nstages:\n  - {device: cpu, layers: [embed, head], [daehhead]: 0}\n", "k.yaml"),
                       doctest::Contains("has a key that is not a name"), InputError);
}
