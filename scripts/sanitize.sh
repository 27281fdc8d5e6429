#!/usr/bin/env bash
# The test suite under sanitizers (CI, .ci/run, runs this after the README's test command):
#   asan  every ctest case built with AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/);
#         any report fails the test that made it (tests/sanitizers/ubsan.supp: one check inside
#         oneTBB's headers)
#   tsan  the executor's tests (oneTBB flow graph over fake stages, no LibTorch) built with
#         ThreadSanitizer (build-tsan/), with tests/sanitizers/tsan.supp for oneTBB's own internals
#         (Debian's libtbb is not instrumented; scheduler/tsan_handoff.h says what the executor adds)
#
#   bash scripts/sanitize.sh [asan] [tsan]     # both by default
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
jobs="$(nproc)"
what=("$@")
[ ${#what[@]} -gt 0 ] || what=(asan tsan)

for w in "${what[@]}"; do
  case "$w" in
    asan)
      if [ ! -f "$root/build-asan/build.ninja" ]; then
        # -O1 -g1: the sanitizers' usual optimisation, line tables for the reports, a quicker build.
        cmake -S "$root" -B "$root/build-asan" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPIPETRAIN_BENCHMARKS=OFF \
          -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" \
          -DCMAKE_CXX_FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer" \
          -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined"
      fi
      cmake --build "$root/build-asan"
      # Leaks: LibTorch and oneTBB keep process-lifetime allocations that LeakSanitizer reports at
      # exit; the checks that matter here are the memory errors and undefined behaviour.
      (cd "$root/build-asan" &&
        ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:strict_string_checks=1" \
        UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:suppressions=$root/tests/sanitizers/ubsan.supp" \
        ctest --output-on-failure -j"$jobs")
      ;;
    tsan)
      if [ ! -f "$root/build-tsan/build.ninja" ]; then
        cmake -S "$root" -B "$root/build-tsan" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPIPETRAIN_BENCHMARKS=OFF \
          -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" \
          -DCMAKE_CXX_FLAGS="-fsanitize=thread" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=thread"
      fi
      cmake --build "$root/build-tsan" --target test_executor
      # Three runs: thread interleavings differ from run to run.
      for i in 1 2 3; do
        TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$root/tests/sanitizers/tsan.supp" \
          "$root/build-tsan/tests/test_executor"
      done
      ;;
    *)
      echo "usage: bash scripts/sanitize.sh [asan] [tsan]" >&2
      exit 2
      ;;
  esac
done
