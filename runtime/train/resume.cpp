#include "runtime/train/resume.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "memory/errors.h"
#include "runtime/train/lr_schedule.h"

namespace pipetrain {
namespace {

RunConfig saved_config(const CheckpointInfo& checkpoint) {
  return parse_run_config(checkpoint.config_yaml, "the config in checkpoint '" + checkpoint.path + "'");
}

std::string joined(const std::vector<std::string>& items) {
  std::string out = "[";
  for (const std::string& s : items) out += (out.size() > 1 ? ", " : "") + s;
  return out + "]";
}

std::string number(double v) {
  std::ostringstream out;
  out << v;
  return out.str();
}

std::string rate(double v) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.3e", v);
  return text;
}

}  // namespace

const std::vector<std::string>& resume_change_kinds() {
  static const std::vector<std::string> kinds = {"model", "data", "tokenizer", "seed"};
  return kinds;
}

std::vector<std::string> parse_allowed_changes(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream in(list);
  for (std::string item; std::getline(in, item, ',');) {
    const auto& kinds = resume_change_kinds();
    if (std::find(kinds.begin(), kinds.end(), item) == kinds.end()) {
      throw InputError("--allow-changes: '" + item + "' is not one of " + joined(kinds));
    }
    out.push_back(item);
  }
  return out;
}

std::vector<ResumeChange> resume_changes(const CheckpointInfo& checkpoint, const RunConfig& now, const Corpus& corpus) {
  const RunConfig was = saved_config(checkpoint);
  std::vector<ResumeChange> changes;
  const auto compare = [&](const char* kind, const std::string& key, const std::string& before, const std::string& after) {
    if (before != after) changes.push_back({kind, key + " " + before + " -> " + after});
  };
  const ModelConfig& a = was.model;
  const ModelConfig& b = now.model;
  compare("model", "model.vocab_size", std::to_string(a.vocab_size), std::to_string(b.vocab_size));
  compare("model", "model.hidden_dim", std::to_string(a.hidden_dim), std::to_string(b.hidden_dim));
  compare("model", "model.num_layers", std::to_string(a.num_layers), std::to_string(b.num_layers));
  compare("model", "model.num_heads", std::to_string(a.num_heads), std::to_string(b.num_heads));
  compare("model", "model.intermediate_size", std::to_string(a.intermediate_size), std::to_string(b.intermediate_size));
  compare("model", "model.seq_len", std::to_string(a.seq_len), std::to_string(b.seq_len));
  compare("data", "data.files", joined(was.data.files), joined(now.data.files));
  compare("data", "data.val_fraction", number(was.data.val_fraction), number(now.data.val_fraction));
  compare("seed", "train.seed", std::to_string(was.train.seed), std::to_string(now.train.seed));
  // What the files and the tokenizer hold (checkpoints written before these were recorded have none).
  const auto recorded = [&](const char* key) {
    const auto it = checkpoint.inputs.find(key);
    return it == checkpoint.inputs.end() ? std::string() : it->second;
  };
  const std::string data = recorded("data");
  if (!data.empty() && data != hex16(corpus.fingerprint()) && was.data.files == now.data.files) {
    changes.push_back({"data", "the contents of data.files (fingerprint " + data + " -> " + hex16(corpus.fingerprint()) + ")"});
  }
  const std::string tokenizer = recorded("tokenizer");
  if (!tokenizer.empty() && tokenizer != hex16(corpus.tokenizer_fingerprint())) {
    changes.push_back({"tokenizer", "data.tokenizer's model (fingerprint " + tokenizer + " -> " +
                                        hex16(corpus.tokenizer_fingerprint()) + ", now " + corpus.tokenizer() + ")"});
  }
  return changes;
}

void check_resume(const CheckpointInfo& checkpoint, const RunConfig& now, const Corpus& corpus,
                  const std::vector<std::string>& allowed) {
  // The world size is the global batch: another is another run's optimization, never allowed.
  const int64_t was_replicas = saved_config(checkpoint).train.replicas;
  if (was_replicas != now.train.replicas) {
    throw InputError("--resume from '" + checkpoint.path + "': its run trained " + std::to_string(was_replicas) +
                     " replica(s) of the pipeline, this one " + std::to_string(now.train.replicas) +
                     " (train.replicas; one process each): the global batch would change. Start the same number of "
                     "processes, or train a new run with --init-from an export of this checkpoint");
  }
  std::string refused;
  std::vector<std::string> kinds;
  for (const ResumeChange& c : resume_changes(checkpoint, now, corpus)) {
    if (std::find(allowed.begin(), allowed.end(), c.kind) != allowed.end()) continue;
    refused += "\n  " + c.kind + ": " + c.what;
    if (std::find(kinds.begin(), kinds.end(), c.kind) == kinds.end()) kinds.push_back(c.kind);
  }
  if (refused.empty()) return;
  std::string list;
  for (const std::string& k : kinds) list += (list.empty() ? "" : ",") + k;
  throw InputError("--resume from '" + checkpoint.path + "' would continue another run; what changed:" + refused +
                   "\n(continue it anyway with --allow-changes " + list + ")");
}

RunConfig continue_schedule(const CheckpointInfo& checkpoint, RunConfig now, std::string& note) {
  note.clear();
  const RunConfig was = saved_config(checkpoint);
  const int64_t step = checkpoint.step;
  if (was.train.steps == now.train.steps || step >= now.train.steps) return now;
  const double before = lr_at_step(was.train, step);
  const double planned = lr_at_step(now.train, step);
  if (before == planned) return now;  // still warming up: the two schedules agree from here
  now.train.lr_continue_step = step;
  now.train.lr_continue_value = before;
  note = "train.steps " + std::to_string(was.train.steps) + " -> " + std::to_string(now.train.steps) +
         ": the learning rate goes on from step " + std::to_string(step) + "'s " + rate(before) +
         " and decays by cosine to " + rate(now.train.optimizer.lr * now.train.min_lr_ratio) + " at step " +
         std::to_string(now.train.steps) + " (continuous; a run planned for " + std::to_string(now.train.steps) +
         " steps would be at " + rate(planned) + " here)";
  return now;
}

}  // namespace pipetrain
