#!/usr/bin/env bash
# scripts/check_layers.cmake refuses an include across a room's line, and LibTorch in a room that
# must build without it; it accepts the repository as it is.
#   bash tests/check_layers_test.sh <source dir>
set -uo pipefail
root="$1"
script="$root/scripts/check_layers.cmake"
tree="$(mktemp -d /tmp/pipetrain-layers-XXXXXX)"
trap 'rm -rf "$tree"' EXIT
failures=0

# expect_refusal NAME FILE LINE MESSAGE: a tree with one planted include must fail, naming it.
expect_refusal() {
  local name=$1 file=$2 line=$3 message=$4
  rm -rf "$tree"/*
  mkdir -p "$tree/$(dirname "$file")"
  printf '%s\n' "$line" > "$tree/$file"
  local out
  if out=$(cmake -DROOT="$tree" -P "$script" 2>&1); then
    echo "FAIL $name: the check passed a tree with $file: $line"; failures=$((failures + 1))
  elif [[ "$out" != *"$message"* ]]; then
    echo "FAIL $name: the refusal does not say '$message':"; echo "$out"; failures=$((failures + 1))
  else
    echo "ok   $name"
  fi
}

expect_refusal "memory may not use the trainer" memory/a.h '#include "runtime/train/trainer.h"' \
  'memory/a.h: includes "runtime/train/trainer.h" (room runtime/train)'
expect_refusal "scheduler stays without LibTorch" scheduler/b.cpp '#include <torch/torch.h>' \
  'scheduler/b.cpp: includes LibTorch'
expect_refusal "cuda/ uses the interface, not the rest of runtime" runtime/backends/cuda/c.cpp \
  '#include "runtime/backends/registry.h"' 'runtime/backends/cuda/c.cpp: includes "runtime/backends/registry.h"'
expect_refusal "io may not use the trainer" runtime/io/d.cpp '#include "runtime/train/pipeline_trainer.h"' \
  'runtime/io/d.cpp: includes "runtime/train/pipeline_trainer.h"'
expect_refusal "the CLI's rooms may not be used by the tools" runtime/tools/e.cpp '#include "runtime/cli/cli_util.h"' \
  'runtime/tools/e.cpp: includes "runtime/cli/cli_util.h"'

# Allowed includes pass: the interface from cuda/, and the repository itself.
rm -rf "$tree"/*
mkdir -p "$tree/runtime/backends/cuda"
printf '#include "runtime/backends/backend.h"\n#include "memory/device.h"\n' > "$tree/runtime/backends/cuda/f.cpp"
if cmake -DROOT="$tree" -P "$script" > /dev/null 2>&1; then echo "ok   cuda/ may include the interface"; else
  echo "FAIL cuda/ including the interface was refused"; failures=$((failures + 1)); fi
if cmake -DROOT="$root" -P "$script" > /dev/null 2>&1; then echo "ok   the repository follows its rules"; else
  echo "FAIL the repository breaks its own rules:"; cmake -DROOT="$root" -P "$script"; failures=$((failures + 1)); fi

echo "$((7 - failures)) passed, $failures failed"
[ "$failures" -eq 0 ]
