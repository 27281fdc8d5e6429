// What `train --resume` checks and adapts before a run goes on from its checkpoint.
//
// A resume continues the run the checkpoint holds. Four things would make it another run, so each
// is refused (naming the values on both sides) unless --allow-changes lists it:
//   model      an architecture field (vocab_size, hidden_dim, num_layers, num_heads,
//              intermediate_size, seq_len);
//   data       data.files or data.val_fraction, or the files' contents (the corpus fingerprint the
//              checkpoint recorded);
//   tokenizer  the tokenizer model's contents (its fingerprint);
//   seed       train.seed (it orders every epoch's windows).
// A changed train.steps is always allowed and keeps the learning rate continuous: from the
// checkpoint's step it decays by cosine from that step's rate to the floor at the new end
// (train.lr_continue_step/value, kept in config.yaml), rather than jumping to where a run planned
// with the new length would be.
//
//   RunConfig run = continue_schedule(checkpoint, run, note);   // before the trainer exists
//   check_resume(checkpoint, run, trainer.corpus(), allowed);    // InputError listing the changes
#pragma once

#include <string>
#include <vector>

#include "runtime/config/run_config.h"
#include "runtime/data/corpus.h"
#include "runtime/io/checkpoint.h"

namespace pipetrain {

// The names --allow-changes takes.
const std::vector<std::string>& resume_change_kinds();

// --allow-changes's value ("model,data"), checked against resume_change_kinds (InputError naming
// an unknown one).
std::vector<std::string> parse_allowed_changes(const std::string& list);

struct ResumeChange {
  std::string kind;  // one of resume_change_kinds()
  std::string what;  // "model.hidden_dim 256 -> 512"
};

// Every difference between the checkpoint's run and this one, in the kinds above.
std::vector<ResumeChange> resume_changes(const CheckpointInfo& checkpoint, const RunConfig& now, const Corpus& corpus);

// InputError listing each change whose kind `allowed` does not name (and how to allow it).
void check_resume(const CheckpointInfo& checkpoint, const RunConfig& now, const Corpus& corpus,
                  const std::vector<std::string>& allowed);

// `now` with the learning rate continued from the checkpoint's step when train.steps differs from
// the checkpoint's run; `note` says what was done (empty when nothing changed).
RunConfig continue_schedule(const CheckpointInfo& checkpoint, RunConfig now, std::string& note);

}  // namespace pipetrain
