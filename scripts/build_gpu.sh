#!/usr/bin/env bash
# Builds pipetrain with CUDA into build-gpu/, against the LibTorch inside the installed PyTorch
# (torch.utils.cmake_prefix_path) and the CUDA toolkit, with the other dependencies from Debian
# packages unpacked into .deps/prefix (scripts/gpu_deps.sh) when they are not installed system-wide.
# Extra arguments go to cmake --build.
#
#   bash scripts/gpu_deps.sh fetch     # once, where Debian's registry is reachable
#   bash scripts/build_gpu.sh          # on the GPU machine
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
torch_prefix="$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null)" || {
  echo "build_gpu.sh: '$python' cannot import torch; install PyTorch with CUDA, or set PYTHON" >&2
  exit 2
}
torch_version="$("$python" -c 'import torch; print(torch.__version__)')"
torch_cuda="$("$python" -c 'import torch; print(torch.version.cuda or "")')"
[ -n "$torch_cuda" ] || { echo "build_gpu.sh: PyTorch $torch_version has no CUDA" >&2; exit 2; }
cuda_home="${CUDA_HOME:-/usr/local/cuda}"
[ -x "$cuda_home/bin/nvcc" ] || { echo "build_gpu.sh: no CUDA toolkit at $cuda_home (set CUDA_HOME)" >&2; exit 2; }
export PATH="$cuda_home/bin:$PATH"

prefix_path="$torch_prefix"
extra=()
if [ -d "$root/.deps/debs" ]; then
  [ -d "$root/.deps/prefix" ] || bash "$root/scripts/gpu_deps.sh" unpack
  p="$root/.deps/prefix/usr"
  prefix_path="$prefix_path;$p"
  extra+=(-DTBB_DIR="$p/lib/x86_64-linux-gnu/cmake/TBB" -Dyaml-cpp_DIR="$p/lib/x86_64-linux-gnu/cmake/yaml-cpp"
          -Dcxxopts_DIR="$p/lib/cmake/cxxopts" -Ddoctest_DIR="$p/lib/cmake/doctest"
          -Dnlohmann_json_DIR="$p/share/cmake/nlohmann_json")
fi
# ATen asks for C++20 from PyTorch 2.12 on; before that pipetrain's C++17 is what it was written in.
std=17
"$python" -c 'import sys, torch; v = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]); sys.exit(0 if v >= (2, 12) else 1)' && std=20
# The GPU's architecture, so Caffe2's CMake need not probe for it.
arch="${TORCH_CUDA_ARCH_LIST:-$("$python" -c 'import torch; c = torch.cuda.get_device_capability() if torch.cuda.is_available() else (9, 0); print(f"{c[0]}.{c[1]}")')}"
echo "build_gpu.sh: PyTorch $torch_version (CUDA $torch_cuda), toolkit $cuda_home, C++$std, arch $arch"
if [ ! -f "$root/build-gpu/build.ninja" ]; then
  TORCH_CUDA_ARCH_LIST="$arch" cmake -S "$root" -B "$root/build-gpu" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$prefix_path" -DCUDAToolkit_ROOT="$cuda_home" -DCMAKE_CXX_STANDARD="$std" \
    -DCMAKE_POLICY_VERSION_MINIMUM=3.5 "${extra[@]}"
fi
cmake --build "$root/build-gpu" "$@"
