#!/usr/bin/env bash
# SIGKILL at random moments never leaves a newest checkpoint that fails to load.
#
# Each trial starts a small training run that saves a checkpoint after every step, kills it with
# SIGKILL at a random moment after its first checkpoint (often in the middle of a save), then
# resumes it: the resume must succeed, and it must start from the newest complete checkpoint
# directory (step-N, not .partial). Every second trial saves in the background while training
# goes on (train.background_checkpoints), so the kill often lands in a save that overlaps a step.
#
#   bash scripts/sigkill_trials.sh build/pipetrain [trials]
set -euo pipefail
bin="$1"
trials="${2:-20}"
work="$(mktemp -d /tmp/pipetrain-sigkill-XXXXXX)"
trap 'rm -rf "$work"' EXIT

cat > "$work/config.yaml" <<YAML
model: {hidden_dim: 32, num_layers: 2, num_heads: 2, intermediate_size: 64, seq_len: 16}
train: {micro_batch_size: 2, micro_batches: 2, eval_interval: 100000, eval_batches: 1, checkpoint_interval: 1, keep_checkpoints: 2}
data: {files: [/usr/share/common-licenses/GPL-3]}
hardware: rtx2070s-wsl
YAML

resumed=0
for trial in $(seq 1 "$trials"); do
  out="$work/run$trial"
  background=$(( trial % 2 == 0 ))
  mode="saving in the foreground"
  [ "$background" = 1 ] && mode="saving in the background"
  "$bin" train --config "$work/config.yaml" --steps 1000000 --out "$out" \
    --set train.background_checkpoints=$([ "$background" = 1 ] && echo true || echo false) > "$work/log$trial" 2>&1 &
  pid=$!
  # After its first checkpoint (however long a loaded machine or a sanitizer takes to get there; at
  # most 4 minutes), at a random moment within the next 1.5 s: a later save, often half-written.
  for _ in $(seq 1 2400); do
    ls -1 "$out/checkpoints" 2> /dev/null | grep -qE '^step-[0-9]+$' && break
    kill -0 "$pid" 2> /dev/null || break
    sleep 0.1
  done
  sleep "$(awk -v seed="$RANDOM" 'BEGIN { srand(seed); printf "%.3f", rand() * 1.5 }')"
  kill -KILL "$pid" 2> /dev/null || true
  wait "$pid" 2> /dev/null || true
  newest="$(ls -1 "$out/checkpoints" 2> /dev/null | grep -E '^step-[0-9]+$' | sort | tail -n 1 || true)"
  if [ -z "$newest" ]; then
    echo "trial $trial: killed before the first checkpoint"
    continue
  fi
  step=$((10#${newest#step-}))
  # Counted before the resume, whose own save of the next step clears a stale step-N.partial.
  partial="$(ls -1 "$out/checkpoints" | grep -c partial || true)"
  if ! "$bin" train --resume "$out" --steps $((step + 1)) > "$work/resume$trial" 2>&1; then
    echo "trial $trial: FAILED: resuming after SIGKILL at step $step:" >&2
    cat "$work/resume$trial" >&2
    exit 1
  fi
  if ! grep -q "resumed from $out/checkpoints/$newest " "$work/resume$trial"; then
    echo "trial $trial: FAILED: the newest checkpoint $newest did not load:" >&2
    cat "$work/resume$trial" >&2
    exit 1
  fi
  echo "trial $trial ($mode): killed after step $step ($partial half-written left behind); resumed from $newest"
  resumed=$((resumed + 1))
done
echo "$resumed of $trials trials resumed from their newest checkpoint"
[ "$resumed" -ge $((trials / 2)) ] || { echo "too few trials reached a checkpoint" >&2; exit 1; }
