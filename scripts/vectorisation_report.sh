#!/usr/bin/env bash
# GCC's vectorisation report for the fused CPU AdamW (stages/kernels/cpu_adamw.cpp): which of its
# loops were vectorised, for each instruction set it is compiled for (target_clones), and with
# what vector width. The README of benchmarks/ quotes it.
#   bash scripts/vectorisation_report.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source="$root/stages/kernels/cpu_adamw.cpp"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
g++ -std=c++17 -O3 -DNDEBUG -fno-math-errno -ffp-contract=off -I"$root" -c "$source" -o "$out/kernel.o" \
  -fopt-info-vec-optimized="$out/report.txt"
# One line per vectorised loop: where, and the vector size GCC chose.
grep -E "loop vectorized" "$out/report.txt" | sed -E "s|$root/||" | sort | uniq -c
echo "the AdamW arithmetic (update, update_bf16_moments), by line:"
awk '/void update/{start=NR; name=$3; sub(/\(.*/, "", name)} start && /^}/{print name ": lines " start "-" NR; start=0}' "$source"
