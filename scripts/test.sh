#!/usr/bin/env bash
# The test command a person runs (README): sets up, builds what the suite needs (the
# pipetrain_tests target: every test program and the pipetrain binary; `bash scripts/build.sh`
# builds the benchmark programs too), runs every test suite through ctest. A few minutes on 2
# cores. CI (.ci/run) runs this, then the longer checks: the parsers under libFuzzer
# (scripts/fuzz.sh) and the suite under sanitizers (scripts/sanitize.sh).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/build.sh" --target pipetrain_tests
cd "$root/build"
ctest --output-on-failure -j"$(nproc)"
