#!/usr/bin/env bash
# Fuzzes the config, hardware and stage-map parsers (seeded from configs/) and the safetensors reader
# (seeded from tests/write_safetensors.py) for a bounded time (default 60 s: two thirds to the
# first, one third to the second) with libFuzzer under AddressSanitizer and UndefinedBehaviorSanitizer.
# Any crash, sanitizer report, non-InputError exception or hang fails the run; libFuzzer leaves the
# input that caused it in build-fuzz/ (crash-*, timeout-*).
#   bash scripts/fuzz.sh [seconds]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${1:-60}"
bash "$root/scripts/setup.sh"
build="$root/build-fuzz"
CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DPIPETRAIN_TESTS=OFF -DPIPETRAIN_BENCHMARKS=OFF -DPIPETRAIN_FUZZ=ON \
  -DCMAKE_CXX_FLAGS="-fsanitize=address,undefined -fsanitize=fuzzer-no-link -fno-sanitize-recover=undefined" > /dev/null
cmake --build "$build" --target fuzz_config fuzz_safetensors
corpus="$(mktemp -d /tmp/pipetrain-fuzz-XXXXXX)"
weights="$(mktemp -d /tmp/pipetrain-fuzz-XXXXXX)"
trap 'rm -rf "$corpus" "$weights"' EXIT
find "$root/configs" -name '*.yaml' -exec cp {} "$corpus/" \;
python3 "$root/tests/write_safetensors.py" "$weights/tiny.safetensors" --vocab 3 --hidden 2 --layers 1 --intermediate 2 --seq-len 2
cd "$build"
./fuzz_config -max_total_time="$((seconds * 2 / 3))" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "$corpus" 2>&1 | tail -n 12
./fuzz_safetensors -max_total_time="$((seconds - seconds * 2 / 3))" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  "$weights" 2>&1 | tail -n 12
