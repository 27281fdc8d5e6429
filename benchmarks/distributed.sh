#!/usr/bin/env bash
# Tokens/s of one process against two processes on the loopback interface (c10d over Gloo), each
# process a one-core "host": taskset gives it a core of its own, and the hardware file it plans with
# is this machine profiled on one core, with the loopback's measured bandwidth and latency as its
# network. Three runs per round, interleaved so that all see the same machine:
#   one      the benchmark model as one stage in one process (one host);
#   stages   two stages, the second on host 1 (two processes, activations and gradients over TCP);
#   replicas two replicas of the one-stage pipeline, each on half of the global batch (gradients
#            summed over TCP), against `one` with the same global batch.
# Beside each, the plan's prediction for the same network figures. Prints a line per run and the
# medians.
#   bash benchmarks/distributed.sh [rounds] [steps]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
rounds="${1:-3}"
steps="${2:-8}"
bin="$root/build/pipetrain"
[ -x "$bin" ] || { echo "error: $bin is missing: bash scripts/build.sh" >&2; exit 2; }
[ "$(nproc)" -ge 2 ] || { echo "error: two processes of one core each need 2 cores; this machine has $(nproc)" >&2; exit 2; }
work="$(mktemp -d /tmp/pipetrain-dist-XXXXXX)"
trap 'rm -rf "$work"' EXIT
model="--set model.num_layers=8 --set model.num_heads=8 --set train.micro_batch_size=4 --set train.micro_batches=8"
model="$model --set train.eval_interval=100000 --set train.checkpoint_interval=0 --set data.tokenizer=bytes"
printf -- "- {device: cpu, layers: [embed, head]}\n" > "$work/one.yaml"
printf -- "- {device: cpu, layers: [embed, 3]}\n- {device: cpu, layers: [4, head], host: 1}\n" > "$work/stages.yaml"

# The loopback's TCP bandwidth (64 MiB in 1 MiB writes) and one-way latency (half a 1-byte round trip).
read -r gb_per_s latency_us < <(/usr/bin/python3 - <<'PY'
import socket, threading, time
def pair():
    server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen(1)
    client = socket.create_connection(server.getsockname()); peer, _ = server.accept()
    for s in (client, peer): s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client, peer
a, b = pair()
total, chunk = 64 << 20, b"x" * (1 << 20)
def drain():
    got = 0
    while got < total: got += len(b.recv(1 << 20))
t = threading.Thread(target=drain); start = time.perf_counter(); t.start()
for _ in range(total // len(chunk)): a.sendall(chunk)
t.join(); bandwidth = total / (time.perf_counter() - start)
start = time.perf_counter()
for _ in range(2000): a.sendall(b"x"); b.recv(1); b.sendall(b"y"); a.recv(1)
latency = (time.perf_counter() - start) / 2000 / 2
print(f"{bandwidth / 1e9:.3f} {latency * 1e6:.1f}")
PY
)
echo "loopback: ${gb_per_s} GB/s, ${latency_us} us one way (python sockets)" >&2

# This machine as a one-core host, profiled for the benchmark model, with the loopback as its network.
# shellcheck disable=SC2086
taskset -c 0 "$bin" profile $model --out "$work/host.yaml" > "$work/profile.log" 2>&1 ||
  { cat "$work/profile.log" >&2; exit 1; }
printf "network: {bandwidth_gb_per_s: %s, latency_us: %s}\n" "$gb_per_s" "$latency_us" >> "$work/host.yaml"

# "measured predicted" of a run's last lines.
figures() { sed -n 's/^tokens\/s: \([0-9]*\) measured (median), \([0-9]*\) predicted.*/\1 \2/p' "$1"; }
run() {  # name, processes, extra arguments
  local name=$1 n=$2
  shift 2
  local log="$work/$name.log"
  # shellcheck disable=SC2086
  if [ "$n" -eq 1 ]; then
    taskset -c 0 "$bin" train $model --hardware "$work/host.yaml" --steps $((steps + 2)) --out "$work/run-$name" --overwrite "$@" > "$log" 2>&1
  else
    bash "$root/scripts/launch_local.sh" "$n" "$bin" train $model --hardware "$work/host.yaml" --steps $((steps + 2)) \
      --out "$work/run-$name" --overwrite "$@" > "$log" 2>&1
  fi || { cat "$log" >&2; exit 1; }
  figures "$log"
}
declare -A measured predicted
for r in $(seq 1 "$rounds"); do
  for case in one stages replicas one_global; do
    case $case in
      one) f=$(run one 1 --stage-map "$work/one.yaml") ;;
      stages) f=$(run stages 2 --stage-map "$work/stages.yaml") ;;
      replicas) f=$(run replicas 2 --stage-map "$work/one.yaml" --set train.replicas=2) ;;
      one_global) f=$(run one_global 1 --stage-map "$work/one.yaml" --set train.micro_batches=16) ;;
    esac
    measured[$case]+="${f% *} "
    predicted[$case]+="${f#* } "
    echo "round $r: $case measured ${f% *} tokens/s, predicted ${f#* }" >&2
  done
done
median() { tr ' ' '\n' | sed '/^$/d' | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
printf "%-11s %10s %10s %8s\n" run measured predicted "m / p"
for case in one one_global stages replicas; do
  m=$(echo "${measured[$case]}" | median)
  p=$(echo "${predicted[$case]}" | median)
  printf "%-11s %10.0f %10.0f %8.2f\n" "$case" "$m" "$p" "$(awk "BEGIN { print $m / $p }")"
done
