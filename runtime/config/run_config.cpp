#include "runtime/config/run_config.h"

#include <yaml-cpp/yaml.h>

#include <fstream>
#include <set>
#include <sstream>

#include "memory/errors.h"
#include "runtime/config/default_config.inc"
#include "runtime/config/hardware_file.h"
#include "runtime/config/yaml_section.h"
#include "runtime/data/tokenizer.h"

namespace pipetrain {
namespace {

constexpr const char* kHint = " (try `pipetrain train --help`)";

void apply_override(YAML::Node& root, const std::string& assignment) {
  if (assignment == "stages=none") {  // no stage map: the whole model as one stage
    root.remove("stages");
    return;
  }
  const auto eq = assignment.find('=');
  const auto dot = assignment.find('.');
  if (eq == std::string::npos || dot == std::string::npos || dot > eq) {
    throw InputError("override '" + assignment + "' must look like section.key=value, e.g. train.lr=1e-3" + kHint);
  }
  const std::string section = assignment.substr(0, dot);
  const std::string key = assignment.substr(dot + 1, eq - dot - 1);
  const std::string value = assignment.substr(eq + 1);
  if (key.empty() || key.find('.') != std::string::npos) {
    throw InputError("override '" + assignment + "' must name one key of one section, e.g. model.num_layers=4");
  }
  YAML::Node parsed;
  try {
    parsed = YAML::Load(value);
  } catch (const YAML::Exception& e) {
    throw InputError("override '" + assignment + "': value is not valid YAML: " + e.msg);
  }
  if (!root[section]) root[section] = YAML::Node(YAML::NodeType::Map);
  if (!root[section].IsMap()) {
    throw InputError("override '" + assignment + "': section '" + section + "' is not a mapping");
  }
  root[section][key] = parsed;
}

void require_positive(int64_t value, const std::string& key, const std::string& source) {
  if (value <= 0) throw InputError(source + ": " + key + " must be positive, got " + std::to_string(value));
}

void require_non_negative(double value, const std::string& key, const std::string& source) {
  if (!(value >= 0.0)) {
    std::ostringstream out;
    out << source << ": " << key << " must be >= 0, got " << value;
    throw InputError(out.str());
  }
}

// Sizes beyond these are certainly typos, and keeping them bounded keeps the arithmetic in the
// estimator far from overflow.
constexpr int64_t kMaxDim = 1 << 20;
constexpr int64_t kMaxLayers = 100000;
// Micro-batches are counted in int across the scheduler; a step's tokens, and a validation
// batch's, stay within int32 so that no index over them can overflow.
constexpr int64_t kMaxMicroBatches = 1 << 16;
// A deeper window than this holds more layers than any model here needs in flight on a copy engine.
constexpr int64_t kMaxWindowLayers = 64;
constexpr int64_t kMaxReplicas = 4096;
constexpr int64_t kMaxStepTokens = (int64_t{1} << 31) - 1;

void validate(const RunConfig& run) {
  const std::string& src = run.source;
  const ModelConfig& m = run.model;
  require_positive(m.vocab_size, "model.vocab_size", src);
  require_positive(m.hidden_dim, "model.hidden_dim", src);
  require_positive(m.num_layers, "model.num_layers", src);
  require_positive(m.num_heads, "model.num_heads", src);
  require_positive(m.intermediate_size, "model.intermediate_size", src);
  require_positive(m.seq_len, "model.seq_len", src);
  for (const auto& [key, value] : {std::pair<const char*, int64_t>{"model.vocab_size", m.vocab_size},
                                  {"model.hidden_dim", m.hidden_dim},
                                  {"model.intermediate_size", m.intermediate_size},
                                  {"model.seq_len", m.seq_len},
                                  {"model.num_heads", m.num_heads}}) {
    if (value > kMaxDim) {
      throw InputError(src + ": " + key + " = " + std::to_string(value) + " is larger than the limit " +
                       std::to_string(kMaxDim));
    }
  }
  if (m.num_layers > kMaxLayers) {
    throw InputError(src + ": model.num_layers = " + std::to_string(m.num_layers) + " is larger than the limit " +
                     std::to_string(kMaxLayers));
  }
  if (m.hidden_dim % m.num_heads != 0) {
    throw InputError(src + ": model.hidden_dim = " + std::to_string(m.hidden_dim) +
                     " is not divisible by model.num_heads = " + std::to_string(m.num_heads));
  }
  if (run.data.tokenizer.empty() && m.vocab_size < 256) {
    throw InputError(src + ": model.vocab_size = " + std::to_string(m.vocab_size) +
                     " is too small for byte-level tokens (need at least 256)");
  }

  const TrainConfig& t = run.train;
  // bfloat16 state is the fused CPU AdamW's (memory/optimizer_config.h optimizer_method); any other
  // optimizer would keep float32 state under a setting that says otherwise.
  if (t.optimizer.state_dtype != Dtype::kFloat32 && !(t.optimizer.kind == OptimizerKind::adamw())) {
    throw InputError(src + ": precision.moments is " + dtype_name(t.optimizer.state_dtype) + ", but train.optimizer is " +
                     t.optimizer.kind.name() + ": only AdamW keeps its state in " + dtype_name(t.optimizer.state_dtype) +
                     " (" + t.optimizer.kind.name() + "'s stays float32); drop precision.moments or use adamw");
  }
  require_positive(t.steps, "train.steps", src);
  require_positive(t.micro_batch_size, "train.micro_batch_size", src);
  require_positive(t.micro_batches, "train.micro_batches", src);
  if (t.micro_batches > kMaxMicroBatches) {
    throw InputError(src + ": train.micro_batches = " + std::to_string(t.micro_batches) + " is larger than the limit " +
                     std::to_string(kMaxMicroBatches));
  }
  if (t.micro_batch_size > kMaxDim) {
    throw InputError(src + ": train.micro_batch_size = " + std::to_string(t.micro_batch_size) + " is larger than the limit " +
                     std::to_string(kMaxDim));
  }
  // Both factors are at most 2^20 and seq_len + 1 at most 2^20 + 1: the products below fit int64.
  const int64_t step_tokens = t.micro_batch_size * t.micro_batches * (m.seq_len + 1);
  if (step_tokens > kMaxStepTokens) {
    throw InputError(src + ": a step of train.micro_batches = " + std::to_string(t.micro_batches) +
                     " x train.micro_batch_size = " + std::to_string(t.micro_batch_size) + " windows of model.seq_len + 1 = " +
                     std::to_string(m.seq_len + 1) + " tokens is " + std::to_string(step_tokens) + " tokens, over the limit " +
                     std::to_string(kMaxStepTokens));
  }
  if (t.replicas < 1 || t.replicas > kMaxReplicas) {
    throw InputError(src + ": train.replicas must be in [1, " + std::to_string(kMaxReplicas) +
                     "] (copies of the pipeline, one per group of processes), got " + std::to_string(t.replicas));
  }
  if (step_tokens * t.replicas > kMaxStepTokens) {  // at most 2^31 x 2^12: fits int64
    throw InputError(src + ": the global batch of train.replicas = " + std::to_string(t.replicas) + " steps of " +
                     std::to_string(step_tokens) + " tokens is over the limit " + std::to_string(kMaxStepTokens));
  }
  require_positive(t.eval_interval, "train.eval_interval", src);
  require_positive(t.eval_batches, "train.eval_batches", src);
  if (t.eval_batches > kMaxMicroBatches) {
    throw InputError(src + ": train.eval_batches = " + std::to_string(t.eval_batches) + " is larger than the limit " +
                     std::to_string(kMaxMicroBatches));
  }
  require_positive(t.log_interval, "train.log_interval", src);
  if (t.checkpoint_interval < 0) {
    throw InputError(src + ": train.checkpoint_interval must be >= 0 (0: only at the end), got " +
                     std::to_string(t.checkpoint_interval));
  }
  require_positive(t.keep_checkpoints, "train.keep_checkpoints", src);
  if (t.window_layers < 1 || t.window_layers > kMaxWindowLayers) {
    throw InputError(src + ": train.window_layers must be in [1, " + std::to_string(kMaxWindowLayers) + "] (a streamed stage's GPU window, in layers), got " +
                     std::to_string(t.window_layers));
  }
  const OptimizerConfig& o = t.optimizer;
  if (!(o.lr > 0.0)) {
    std::ostringstream out;
    out << src << ": train.lr must be positive, got " << o.lr;
    throw InputError(out.str());
  }
  require_non_negative(static_cast<double>(t.warmup_steps), "train.warmup_steps", src);
  // (Not bound by train.steps: a resume asked for fewer steps than the run has done says
  // "nothing to do" instead.)
  if (t.lr_continue_step >= 0 && !(t.lr_continue_value > 0.0)) {
    std::ostringstream out;
    out << src << ": train.lr_continue_step " << t.lr_continue_step << " needs a positive train.lr_continue_value (got "
        << t.lr_continue_value << ")";
    throw InputError(out.str());
  }
  require_non_negative(o.weight_decay, "train.weight_decay", src);
  require_non_negative(o.momentum, "train.momentum", src);
  require_non_negative(t.grad_clip, "train.grad_clip", src);
  if (!(o.eps > 0.0)) {
    // AdamW divides by sqrt(v) + eps: with eps 0 an element whose gradient was always 0 becomes 0 / 0.
    std::ostringstream out;
    out << src << ": train.eps must be positive, got " << o.eps;
    throw InputError(out.str());
  }
  require_non_negative(static_cast<double>(t.intra_op_threads), "train.intra_op_threads", src);
  require_non_negative(static_cast<double>(t.blas_threads), "train.blas_threads", src);
  const auto require_fraction = [&](double value, const char* key, bool one_allowed) {
    if (value >= 0.0 && (value < 1.0 || (one_allowed && value == 1.0))) return;
    std::ostringstream out;
    out << src << ": " << key << " must be in [0, 1" << (one_allowed ? "]" : ")") << ", got " << value;
    throw InputError(out.str());
  };
  require_fraction(t.min_lr_ratio, "train.min_lr_ratio", true);
  require_fraction(o.beta1, "train.beta1", false);
  require_fraction(o.beta2, "train.beta2", false);
  if (!o.kind.def().uses_momentum && o.momentum != 0.0) {
    std::string users;
    for (OptimizerKind k : OptimizerKind::all()) {
      if (k.def().uses_momentum) users += (users.empty() ? "" : ", ") + k.name();
    }
    throw InputError(src + ": train.momentum is not used by train.optimizer: " + o.kind.name() + " (only by " + users + ")");
  }

  const DataConfig& d = run.data;
  // No data.files is fine for what reads no data (plan); the corpus refuses it when it is read.
  if (!(d.val_fraction > 0.0 && d.val_fraction < 1.0)) {
    std::ostringstream out;
    out << src << ": data.val_fraction must be in (0, 1), got " << d.val_fraction;
    throw InputError(out.str());
  }
}

// precision: {cpu, cuda: compute dtypes (default model.dtype), moments: float32 | bfloat16,
//             loss_scaling: dynamic | none (default: dynamic exactly when something computes in
//             float16), initial_loss_scale, loss_scale_growth_interval}
void read_precision(const YAML::Node& node, const std::string& source, RunConfig& run) {
  Section p(node, "precision", source);
  std::string cpu = dtype_name(run.model.dtype), cuda = cpu, moments = "float32", scaling;
  p.read_string("cpu", cpu);
  p.read_string("cuda", cuda);
  p.read_string("moments", moments);
  p.read_string("loss_scaling", scaling);
  Precision& out = run.precision;
  p.read_number("initial_loss_scale", out.initial_loss_scale);
  p.read_int("loss_scale_growth_interval", out.growth_interval);
  p.reject_unknown_keys();
  try {
    out.cpu = parse_dtype(cpu, "precision.cpu");
    out.cuda = parse_dtype(cuda, "precision.cuda");
    run.train.optimizer.state_dtype = parse_state_dtype(moments);
    out.loss_scaling = scaling.empty() ? (out.uses(Dtype::kFloat16) ? LossScaling::kDynamic : LossScaling::kNone)
                                       : parse_loss_scaling(scaling);
  } catch (const InputError& e) {
    throw InputError(source + ": " + e.what());
  }
  if (!(out.initial_loss_scale >= 1.0 && out.initial_loss_scale <= 1e30)) {
    std::ostringstream text;
    text << source << ": precision.initial_loss_scale must be in [1, 1e30], got " << out.initial_loss_scale;
    throw InputError(text.str());
  }
  require_positive(out.growth_interval, "precision.loss_scale_growth_interval", source);
  if (out.uses(Dtype::kFloat16) && out.loss_scaling == LossScaling::kNone) {
    throw InputError(source + ": precision computes in float16 with loss_scaling: none; float16's range loses small "
                     "gradients and overflows on large ones without a loss scale (use loss_scaling: dynamic)");
  }
}

}  // namespace

const std::string& default_config_text() {
  static const std::string text = kDefaultConfigYaml;
  return text;
}

RunConfig parse_run_config(const std::string& yaml_text, const std::string& source,
                           const std::vector<std::string>& overrides) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw InputError(source + ": not valid YAML: " + e.msg + " (line " + std::to_string(e.mark.line + 1) + ")");
  }
  if (!root || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) throw InputError(source + ": the top level must be a mapping with sections model, train, data");
  for (const auto& entry : root) {
    if (!entry.first.IsScalar()) throw InputError(source + ": a section name must be a name, got " + describe(entry.first));
  }
  for (const std::string& assignment : overrides) apply_override(root, assignment);

  RunConfig run;
  run.source = source;
  std::set<std::string> sections;
  for (const auto& entry : root) {
    const std::string name = entry.first.as<std::string>();
    if (!sections.insert(name).second) throw InputError(source + ": section '" + name + "' appears twice");
    if (name != "model" && name != "precision" && name != "train" && name != "data" && name != "hardware" &&
        name != "stages") {
      throw InputError(source + ": unknown section '" + name +
                       "'; known sections are model, precision, train, data, hardware, stages");
    }
  }

  Section model(root["model"], "model", source);
  ModelConfig& m = run.model;
  model.read_int("vocab_size", m.vocab_size);
  model.read_int("hidden_dim", m.hidden_dim);
  model.read_int("num_layers", m.num_layers);
  model.read_int("num_heads", m.num_heads);
  model.read_int("intermediate_size", m.intermediate_size);
  model.read_int("seq_len", m.seq_len);
  std::string dtype = dtype_name(m.dtype);
  model.read_string("dtype", dtype);
  try {
    m.dtype = parse_dtype(dtype);
  } catch (const InputError& e) {
    throw InputError(source + ": " + e.what());
  }
  model.reject_unknown_keys();

  Section train(root["train"], "train", source);
  TrainConfig& t = run.train;
  train.read_int("steps", t.steps);
  train.read_int("micro_batch_size", t.micro_batch_size);
  train.read_int("micro_batches", t.micro_batches);
  OptimizerConfig& o = t.optimizer;
  std::string optimizer = o.kind.name();
  train.read_string("optimizer", optimizer);
  try {
    o.kind = OptimizerKind::named(optimizer);
  } catch (const InputError& e) {
    throw InputError(source + ": " + e.what());
  }
  train.read_number("lr", o.lr);
  train.read_number("min_lr_ratio", t.min_lr_ratio);
  train.read_int("warmup_steps", t.warmup_steps);
  train.read_int("lr_continue_step", t.lr_continue_step);
  train.read_number("lr_continue_value", t.lr_continue_value);
  train.read_number("weight_decay", o.weight_decay);
  train.read_number("beta1", o.beta1);
  train.read_number("beta2", o.beta2);
  train.read_number("eps", o.eps);
  train.read_number("momentum", o.momentum);
  train.read_number("grad_clip", t.grad_clip);
  train.read_int("eval_interval", t.eval_interval);
  train.read_int("eval_batches", t.eval_batches);
  train.read_int("log_interval", t.log_interval);
  train.read_int("checkpoint_interval", t.checkpoint_interval);
  train.read_int("keep_checkpoints", t.keep_checkpoints);
  train.read_bool("background_checkpoints", t.background_checkpoints);
  train.read_int("seed", t.seed);
  std::string schedule = t.schedule.name();
  train.read_string("schedule", schedule);
  try {
    t.schedule = ScheduleKind::named(schedule);
  } catch (const InputError& e) {
    throw InputError(source + ": train." + e.what());
  }
  train.read_bool("checkpointing", t.checkpointing);
  train.read_bool("layerwise_update", t.layerwise_update);
  train.read_int("window_layers", t.window_layers);
  train.read_int("replicas", t.replicas);
  train.read_int("intra_op_threads", t.intra_op_threads);
  train.read_int("blas_threads", t.blas_threads);
  train.reject_unknown_keys();

  read_precision(root["precision"], source, run);

  Section data(root["data"], "data", source);
  data.read_string_list("files", run.data.files);
  data.read_number("val_fraction", run.data.val_fraction);
  data.read_string("tokenizer", run.data.tokenizer);
  if (run.data.tokenizer == "bytes") run.data.tokenizer.clear();  // said outright: the default
  data.reject_unknown_keys();
  if (!run.data.tokenizer.empty()) {
    // The vocabulary is the tokenizer's: stated as well, it must agree.
    const int64_t pieces = tokenizer_vocab_size(run.data.tokenizer);
    const YAML::Node& const_root = root;  // const: a lookup adds no key
    const YAML::Node model_node = const_root["model"];
    const bool stated = model_node && model_node.IsMap() && model_node["vocab_size"];
    if (stated && m.vocab_size != pieces) {
      throw InputError(source + ": model.vocab_size = " + std::to_string(m.vocab_size) + ", but data.tokenizer '" +
                       run.data.tokenizer + "' has " + std::to_string(pieces) +
                       " pieces; drop model.vocab_size (it is taken from the tokenizer) or make them equal");
    }
    m.vocab_size = pieces;
  }

  if (const YAML::Node hardware = root["hardware"]) {
    if (!hardware.IsScalar()) {
      throw InputError(source + ": hardware must be a preset name or a file path, got " + describe(hardware));
    }
    run.hardware = hardware.Scalar();
  }
  validate(run);
  if (const YAML::Node stages = root["stages"]) {
    try {
      run.stages = parse_stage_map(stages, run.model, source);
    } catch (const InputError& e) {
      throw InputError(std::string(e.what()) +
                       " (a stage map names the layers of one model; edit `stages:`, or drop it with --set stages=none, "
                       "or give --stage-map FILE or --auto)");
    }
  }
  return run;
}

RunConfig load_run_config_file(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path);
  if (!in) throw InputError("config file '" + path + "' cannot be read (missing or no permission)");
  std::stringstream text;
  text << in.rdbuf();
  return parse_run_config(text.str(), path, overrides);
}

RunConfig load_run_config(const std::optional<std::string>& path, const std::vector<std::string>& overrides) {
  return path ? load_run_config_file(*path, overrides) : parse_run_config(default_config_text(), "default config", overrides);
}

std::string to_yaml(const RunConfig& run) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "model" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "vocab_size" << YAML::Value << run.model.vocab_size;
  out << YAML::Key << "hidden_dim" << YAML::Value << run.model.hidden_dim;
  out << YAML::Key << "num_layers" << YAML::Value << run.model.num_layers;
  out << YAML::Key << "num_heads" << YAML::Value << run.model.num_heads;
  out << YAML::Key << "intermediate_size" << YAML::Value << run.model.intermediate_size;
  out << YAML::Key << "seq_len" << YAML::Value << run.model.seq_len;
  out << YAML::Key << "dtype" << YAML::Value << dtype_name(run.model.dtype);
  out << YAML::EndMap;
  const TrainConfig& t = run.train;
  out << YAML::Key << "train" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "steps" << YAML::Value << t.steps;
  out << YAML::Key << "micro_batch_size" << YAML::Value << t.micro_batch_size;
  out << YAML::Key << "micro_batches" << YAML::Value << t.micro_batches;
  out << YAML::Key << "optimizer" << YAML::Value << t.optimizer.kind.name();
  out << YAML::Key << "lr" << YAML::Value << t.optimizer.lr;
  out << YAML::Key << "min_lr_ratio" << YAML::Value << t.min_lr_ratio;
  out << YAML::Key << "warmup_steps" << YAML::Value << t.warmup_steps;
  if (t.lr_continue_step >= 0) {
    out << YAML::Key << "lr_continue_step" << YAML::Value << t.lr_continue_step;
    out << YAML::Key << "lr_continue_value" << YAML::Value << t.lr_continue_value;
  }
  out << YAML::Key << "weight_decay" << YAML::Value << t.optimizer.weight_decay;
  out << YAML::Key << "beta1" << YAML::Value << t.optimizer.beta1;
  out << YAML::Key << "beta2" << YAML::Value << t.optimizer.beta2;
  out << YAML::Key << "eps" << YAML::Value << t.optimizer.eps;
  out << YAML::Key << "momentum" << YAML::Value << t.optimizer.momentum;
  out << YAML::Key << "grad_clip" << YAML::Value << t.grad_clip;
  out << YAML::Key << "eval_interval" << YAML::Value << t.eval_interval;
  out << YAML::Key << "eval_batches" << YAML::Value << t.eval_batches;
  out << YAML::Key << "log_interval" << YAML::Value << t.log_interval;
  out << YAML::Key << "checkpoint_interval" << YAML::Value << t.checkpoint_interval;
  out << YAML::Key << "keep_checkpoints" << YAML::Value << t.keep_checkpoints;
  out << YAML::Key << "background_checkpoints" << YAML::Value << t.background_checkpoints;
  out << YAML::Key << "seed" << YAML::Value << t.seed;
  out << YAML::Key << "schedule" << YAML::Value << t.schedule.name();
  out << YAML::Key << "checkpointing" << YAML::Value << t.checkpointing;
  out << YAML::Key << "layerwise_update" << YAML::Value << t.layerwise_update;
  out << YAML::Key << "window_layers" << YAML::Value << t.window_layers;
  out << YAML::Key << "replicas" << YAML::Value << t.replicas;
  out << YAML::Key << "intra_op_threads" << YAML::Value << t.intra_op_threads;
  out << YAML::Key << "blas_threads" << YAML::Value << t.blas_threads;
  out << YAML::EndMap;
  out << YAML::Key << "precision" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "cpu" << YAML::Value << dtype_name(run.precision.cpu);
  out << YAML::Key << "cuda" << YAML::Value << dtype_name(run.precision.cuda);
  out << YAML::Key << "moments" << YAML::Value << dtype_name(run.train.optimizer.state_dtype);
  out << YAML::Key << "loss_scaling" << YAML::Value << loss_scaling_name(run.precision.loss_scaling);
  out << YAML::Key << "initial_loss_scale" << YAML::Value << run.precision.initial_loss_scale;
  out << YAML::Key << "loss_scale_growth_interval" << YAML::Value << run.precision.growth_interval;
  out << YAML::EndMap;
  out << YAML::Key << "data" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "files" << YAML::Value << run.data.files;
  out << YAML::Key << "val_fraction" << YAML::Value << run.data.val_fraction;
  if (!run.data.tokenizer.empty()) out << YAML::Key << "tokenizer" << YAML::Value << run.data.tokenizer;
  out << YAML::EndMap;
  out << YAML::Key << "hardware" << YAML::Value << run.hardware;
  if (!run.stages.stages.empty()) {
    out << YAML::Key << "stages" << YAML::Value << YAML::BeginSeq;
    for (const StageSpec& st : run.stages.stages) {
      out << YAML::Flow << YAML::BeginMap << YAML::Key << "device" << YAML::Value << st.device.name() << YAML::Key
          << "layers" << YAML::Value << YAML::Flow << YAML::BeginSeq << layer_ref(run.model, st.first)
          << layer_ref(run.model, st.last) << YAML::EndSeq;
      if (st.cores > 0) out << YAML::Key << "cores" << YAML::Value << st.cores;
      if (st.lanes > 1) out << YAML::Key << "lanes" << YAML::Value << st.lanes;
      if (st.host > 0) out << YAML::Key << "host" << YAML::Value << st.host;
      if (st.weights) out << YAML::Key << "weights" << YAML::Value << st.weights->name();
      if (st.optimizer) out << YAML::Key << "optimizer" << YAML::Value << st.optimizer->name();
      out << YAML::EndMap;
    }
    out << YAML::EndSeq;
  }
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace pipetrain
