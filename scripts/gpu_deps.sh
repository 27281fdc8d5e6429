#!/usr/bin/env bash
# pipetrain's dependencies besides LibTorch, as Debian 12 packages, for a GPU machine that cannot
# reach a package registry (the CUDA LibTorch comes from the PyTorch installed there).
#
#   bash scripts/gpu_deps.sh fetch    # on a machine with Debian's registry: .deps/debs/*.deb
#   bash scripts/gpu_deps.sh unpack   # on the GPU machine: dpkg -x into .deps/prefix (no root needed)
#
# .deps/ is git-ignored; carry it to the GPU machine with the source tree. scripts/build_gpu.sh
# unpacks it when needed and points CMake at the prefix.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
debs="$root/.deps/debs"
prefix="$root/.deps/prefix"
# oneTBB (libtbbbind only because TBB's CMake targets check that its file exists), yaml-cpp,
# cxxopts, doctest, nlohmann-json.
packages=(libtbb-dev libtbb12 libtbbmalloc2 libtbbbind-2-5 libyaml-cpp-dev libyaml-cpp0.7 libcxxopts-dev doctest-dev
          nlohmann-json3-dev)

case "${1:-}" in
  fetch)
    command -v apt-get >/dev/null || { echo "gpu_deps.sh fetch: needs apt-get (Debian 12)" >&2; exit 2; }
    mkdir -p "$debs"
    # apt-get download writes into the current directory; as root it warns that _apt cannot write there.
    (cd "$debs" && apt-get download "${packages[@]}" 2>&1 | grep -v "^W: Download is performed unsandboxed" || true)
    for p in "${packages[@]}"; do
      ls "$debs/${p}_"*.deb >/dev/null 2>&1 || { echo "gpu_deps.sh fetch: $p was not downloaded" >&2; exit 1; }
    done
    echo "fetched ${#packages[@]} packages into $debs ($(du -sh "$debs" | cut -f1))"
    ;;
  unpack)
    command -v dpkg >/dev/null || { echo "gpu_deps.sh unpack: needs dpkg" >&2; exit 2; }
    ls "$debs"/*.deb >/dev/null 2>&1 || { echo "gpu_deps.sh unpack: no .deb files in $debs; run 'gpu_deps.sh fetch' where Debian's registry is reachable" >&2; exit 2; }
    rm -rf "$prefix.partial"
    mkdir -p "$prefix.partial"
    for f in "$debs"/*.deb; do dpkg -x "$f" "$prefix.partial"; done
    rm -rf "$prefix"
    mv "$prefix.partial" "$prefix"
    echo "unpacked $(ls "$debs"/*.deb | wc -l) packages into $prefix"
    ;;
  *)
    echo "usage: bash scripts/gpu_deps.sh fetch|unpack" >&2
    exit 2
    ;;
esac
