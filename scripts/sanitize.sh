#!/usr/bin/env bash
# The test suite under sanitizers (CI, .ci/run, runs `asan tsan` after the README's test command):
#   asan      AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/) over the suites that need
#             no LibTorch, which cover the code that touches memory itself rather than through
#             LibTorch: the planner and estimate (memory/, scheduler/), the executor, the config,
#             hardware and stage-map parsers, the memory-mapped data, and the fused CPU AdamW (raw
#             pointers, vector clones, 16-bit conversions, threads). A few minutes on 2 cores: what
#             CI's 25 minutes leave room for after the plain build and the suite.
#   asan-all  the same over every ctest case (builds everything under ASan: ~40 minutes on 2 cores;
#             run it before a release or after a change to checkpoints, the trainers or the CLI)
#   tsan      the executor's tests (oneTBB flow graph over fake stages, no LibTorch) built with
#             ThreadSanitizer (build-tsan/), with tests/sanitizers/tsan.supp for oneTBB's own internals
#             (Debian's libtbb is not instrumented; scheduler/tsan_handoff.h says what the executor adds)
# Any sanitizer report fails the test that made it (tests/sanitizers/ubsan.supp: one check inside
# oneTBB's headers).
#
#   bash scripts/sanitize.sh [asan|asan-all] [tsan]     # asan tsan by default
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
jobs="$(nproc)"
what=("$@")
[ ${#what[@]} -gt 0 ] || what=(asan tsan)

for w in "${what[@]}"; do
  case "$w" in
    asan | asan-all)
      if [ ! -f "$root/build-asan/build.ninja" ]; then
        # -O1 -g1: the sanitizers' usual optimisation, line tables for the reports, a quicker build.
        cmake -S "$root" -B "$root/build-asan" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPIPETRAIN_BENCHMARKS=OFF \
          -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" \
          -DCMAKE_CXX_FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer" \
          -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined"
      fi
      exclude=()
      if [ "$w" = asan ]; then
        suites=(test_memory test_scheduler test_estimate test_planner test_executor test_config test_data
                test_cpu_adamw_kernel)
        cmake --build "$root/build-asan" --target "${suites[@]}"
        pattern="^($(IFS='|'; echo "${suites[*]}")):"
      else
        cmake --build "$root/build-asan"
        pattern="."
        # 300 steps to show that training learns: 14 minutes under ASan, and no code the others miss.
        exclude=("-E" "the default config learns")
      fi
      # Leaks: LibTorch and oneTBB keep process-lifetime allocations that LeakSanitizer reports at
      # exit; the checks that matter here are the memory errors and undefined behaviour.
      (cd "$root/build-asan" &&
        ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:strict_string_checks=1" \
        UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:suppressions=$root/tests/sanitizers/ubsan.supp" \
        ctest --output-on-failure -j"$jobs" -R "$pattern" "${exclude[@]}")
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
      echo "usage: bash scripts/sanitize.sh [asan|asan-all] [tsan]" >&2
      exit 2
      ;;
  esac
done
