#!/usr/bin/env bash
# Fuzzes the config, hardware and stage-map parsers for a bounded time (default 60 s) with
# libFuzzer under AddressSanitizer and UndefinedBehaviorSanitizer, seeded from configs/.
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
cmake --build "$build" --target fuzz_config
corpus="$(mktemp -d /tmp/pipetrain-fuzz-XXXXXX)"
trap 'rm -rf "$corpus"' EXIT
find "$root/configs" -name '*.yaml' -exec cp {} "$corpus/" \;
cd "$build"
./fuzz_config -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "$corpus" 2>&1 | tail -n 12
