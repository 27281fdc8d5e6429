#!/usr/bin/env bash
# Sets up, builds everything, runs the test suites through ctest, then fuzzes the parsers for 60 s.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/build.sh"
cd "$root/build"
ctest --output-on-failure -j"$(nproc)"
# The config, hardware and stage-map parsers under libFuzzer with ASan and UBSan, for a bounded time.
bash "$root/scripts/fuzz.sh" 60
