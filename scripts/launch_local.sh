#!/usr/bin/env bash
# Starts N processes of one pipetrain command on this machine, as torchrun would: each gets RANK,
# WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1 and MASTER_PORT (a free port, or
# $MASTER_PORT). Each runs on its own share of the usable cores (taskset: nproc / N each, when N is
# at most nproc), so that a plan for "this-machine" sees the cores its process owns. When one exits
# with an error the others are stopped (SIGTERM, then SIGKILL after 10 s); the exit status is the
# first failure's, or 0.
#
#   scripts/launch_local.sh 2 build/pipetrain train --set train.replicas=2 --out runs/two
#
# Rank 0's output passes through; the others' lines are prefixed with "[rank N] ".
set -uo pipefail

if [ $# -lt 2 ] || ! [[ "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: scripts/launch_local.sh N command [args...]   (N processes, ranks 0..N-1)" >&2
  exit 2
fi
n=$1
shift

if [ -z "${MASTER_PORT:-}" ]; then
  # A port the kernel hands out now: free when rank 0 binds it a moment later, in practice.
  MASTER_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
export MASTER_ADDR=127.0.0.1 MASTER_PORT WORLD_SIZE=$n LOCAL_WORLD_SIZE=$n
cores=$(nproc)
per=$((cores / n))
pin() {  # the cores of rank $1, as a taskset prefix (nothing when there are fewer cores than ranks)
  if [ "$per" -ge 1 ] && command -v taskset > /dev/null; then echo "taskset -c $(($1 * per))-$((($1 + 1) * per - 1))"; fi
}

pids=()
for ((r = 0; r < n; r++)); do
  if [ "$r" -eq 0 ]; then
    RANK=$r LOCAL_RANK=$r $(pin $r) "$@" &
  else
    # The prefix runs in a subshell whose pid we keep; the command is its child.
    (RANK=$r LOCAL_RANK=$r $(pin $r) "$@" 2>&1 | sed -u "s/^/[rank $r] /"; exit "${PIPESTATUS[0]}") &
  fi
  pids+=($!)
done

stop_all() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; pkill -TERM -P "$p" 2>/dev/null; done
  for _ in $(seq 100); do
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" -eq 0 ] && return
    sleep 0.1
  done
  for p in "${pids[@]}"; do pkill -KILL -P "$p" 2>/dev/null; kill -KILL "$p" 2>/dev/null; done
}
trap 'stop_all; exit 130' INT TERM

status=0
remaining=$n
while [ "$remaining" -gt 0 ]; do
  wait -n -p done_pid "${pids[@]}" 2>/dev/null
  rc=$?
  remaining=$((remaining - 1))
  if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then
    status=$rc
    for ((r = 0; r < n; r++)); do [ "${pids[$r]}" = "${done_pid:-}" ] && echo "launch_local: rank $r exited with $rc; stopping the others" >&2; done
    stop_all
  fi
done
exit "$status"
