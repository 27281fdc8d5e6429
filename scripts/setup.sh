#!/usr/bin/env bash
# Installs what pipetrain needs from Debian's packages, and nothing else.
# As root it runs apt-get; otherwise it prints the exact command to run and exits 1.
# Usage: scripts/setup.sh            (idempotent: does nothing when all is installed)
set -euo pipefail

# libopenblas0-pthread: Debian's LibTorch uses the reference BLAS otherwise (15x slower here).
# libgloo-dev: the headers of the Gloo that Debian's LibTorch links (its c10d ProcessGroupGloo.hpp
#   includes them): several processes (replicas, stages on other hosts) exchange through it.
# gnuplot-nox: `pipetrain bench` draws its throughput plot with it (without it, bench skips the plot).
# python3: tests/write_safetensors.py, the independent safetensors writer the tests and the
#   fuzz job's seed use (struct and json from the standard library only).
# clang, libclang-rt-14-dev: libFuzzer and the sanitizers for scripts/fuzz.sh (the parsers' fuzz job in CI).
packages=(
  cmake ninja-build g++ pkg-config
  libtorch-dev libopenblas0-pthread
  libtbb-dev libcxxopts-dev doctest-dev libyaml-cpp-dev nlohmann-json3-dev libsentencepiece-dev
  libgloo-dev
  gnuplot-nox python3
  clang libclang-rt-14-dev
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "pipetrain needs these Debian packages: ${missing[*]}" >&2
  echo "Run as root:" >&2
  echo "  sudo sh -c '$cmd'" >&2
  exit 1
fi
echo "setup: installing ${missing[*]}" >&2
sh -c "$cmd"
