#!/usr/bin/env bash
# PyTorch eager from Python (benchmarks/pytorch_eager.py) against pipetrain on the benchmark model
# (vocab 256, hidden 256, 8 layers, 8 heads, ff 1024, seq 128, micro-batch 4 x 8, AdamW), rounds
# interleaved so that both see the same machine: eager with PyTorch's default threads, eager with
# one intra-op thread per core, pipetrain with one stage on every core, pipetrain with one stage
# whose cores are split into one lane per core (a micro-batch per core at once), and pipetrain with
# two stages owning a core each. Prints a line per run and the medians; needs python3-torch (Debian's,
# the same LibTorch 1.13).
#   bash benchmarks/eager_vs_pipetrain.sh [rounds] [steps]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
rounds="${1:-5}"
steps="${2:-12}"
bin="$root/build/pipetrain"
[ -x "$bin" ] || { echo "error: $bin is missing: bash scripts/build.sh" >&2; exit 2; }
/usr/bin/python3 -c "import torch" 2> /dev/null || { echo "error: no PyTorch for /usr/bin/python3: apt-get install python3-torch" >&2; exit 2; }
cores="$(nproc)"
work="$(mktemp -d /tmp/pipetrain-eager-XXXXXX)"
trap 'rm -rf "$work"' EXIT
model="--set model.num_layers=8 --set model.num_heads=8 --set train.micro_batch_size=4 --set train.micro_batches=8"
model="$model --set train.eval_interval=100000 --set train.checkpoint_interval=0 --set data.tokenizer=bytes"
echo "- {device: cpu, layers: [embed, head]}" > "$work/one.yaml"
echo "- {device: cpu, layers: [embed, head], lanes: $cores}" > "$work/lanes.yaml"
printf -- "- {device: cpu, layers: [embed, 3], cores: 1}\n- {device: cpu, layers: [4, head], cores: 1}\n" > "$work/two.yaml"

run_eager() { /usr/bin/python3 "$root/benchmarks/pytorch_eager.py" --steps "$steps" "$@" | sed 's/.*"tokens_per_s": \([0-9.]*\).*/\1/'; }
run_pipetrain() {
  # shellcheck disable=SC2086
  "$bin" train $model --stage-map "$1" --steps $((steps + 2)) --out "$work/run-$2" --overwrite 2> "$work/log-$2" |
    sed -n 's/^done: .* median \([0-9]*\) tokens\/s.*/\1/p'
}
declare -A all
for r in $(seq 1 "$rounds"); do
  all[eager]+="$(run_eager) "
  all[eager_all_cores]+="$(run_eager --threads "$cores") "
  all[pipetrain_one_stage]+="$(run_pipetrain "$work/one.yaml" "one$r") "
  all[pipetrain_lanes]+="$(run_pipetrain "$work/lanes.yaml" "lanes$r") "
  all[pipetrain_two_stages]+="$(run_pipetrain "$work/two.yaml" "two$r") "
  echo "round $r of $rounds done" >&2
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
base="$(echo "${all[eager]}" | median)"
printf "%-24s %-40s %10s %8s\n" "case" "tokens/s per round" "median" "vs eager"
for k in eager eager_all_cores pipetrain_one_stage pipetrain_lanes pipetrain_two_stages; do
  m="$(echo "${all[$k]}" | median)"
  printf "%-24s %-40s %10.0f %7.2fx\n" "$k" "$(printf '%.0f ' ${all[$k]})" "$m" "$(awk -v a="$m" -v b="$base" 'BEGIN {print a / b}')"
done
echo "(machine: $(lscpu | sed -n 's/^Model name: *//p'), $cores cores; $(/usr/bin/python3 -c 'import torch; print("PyTorch", torch.__version__)'); $rounds rounds of $steps steps)"
