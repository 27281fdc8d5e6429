#!/usr/bin/env bash
# Sets up, builds everything, runs the test suites through ctest, fuzzes the parsers for 60 s, then
# runs the suite again under AddressSanitizer + UndefinedBehaviorSanitizer and the executor's tests
# under ThreadSanitizer (scripts/sanitize.sh).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/build.sh"
cd "$root/build"
ctest --output-on-failure -j"$(nproc)"
# The config, hardware and stage-map parsers under libFuzzer with ASan and UBSan, for a bounded time.
bash "$root/scripts/fuzz.sh" 60
# The whole suite under ASan + UBSan, the executor under TSan.
bash "$root/scripts/sanitize.sh" asan tsan
