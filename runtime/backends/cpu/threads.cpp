#include "runtime/backends/cpu/threads.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>

#include <climits>
#include <cstdlib>

namespace pipetrain {
namespace {

using SetThreadsFn = void (*)(int);
using GetThreadsFn = int (*)();
using GetConfigFn = char* (*)();

template <typename Fn>
Fn find_symbol(const char* name) {
  return reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, name));
}

}  // namespace

BlasInfo detect_blas() {
  BlasInfo info;
  void* sgemm = dlsym(RTLD_DEFAULT, "sgemm_");
  Dl_info where{};
  if (sgemm != nullptr && dladdr(sgemm, &where) != 0 && where.dli_fname != nullptr) {
    char resolved[PATH_MAX];
    info.library = realpath(where.dli_fname, resolved) != nullptr ? resolved : where.dli_fname;
  }
  if (auto get_config = find_symbol<GetConfigFn>("openblas_get_config")) {
    info.name = "OpenBLAS";
    info.config = get_config();
  } else if (info.library.find("/blas/libblas") != std::string::npos) {
    info.name = "reference BLAS";
    info.is_reference = true;
  } else {
    info.name = info.library.empty() ? "none found" : "unknown";
  }
  info.can_set_threads = find_symbol<SetThreadsFn>("openblas_set_num_threads") != nullptr;
  return info;
}

int blas_threads() {
  auto get = find_symbol<GetThreadsFn>("openblas_get_num_threads");
  return get != nullptr ? get() : -1;
}

bool set_blas_threads(int threads) {
  auto set = find_symbol<SetThreadsFn>("openblas_set_num_threads");
  if (set == nullptr) return false;
  set(threads);
  return true;
}

ThreadChoice choose_threads(long requested_intra_op, long requested_blas, int usable_cores) {
  ThreadChoice choice;
  const int cores = usable_cores < 1 ? 1 : usable_cores;
  choice.intra_op_threads = requested_intra_op > 0 ? static_cast<int>(requested_intra_op) : 1;
  choice.blas_threads = requested_blas > 0 ? static_cast<int>(requested_blas) : cores;
  if (requested_intra_op > 0 && requested_blas > 0) {
    choice.reason = "set in the config";
  } else {
    choice.reason = "1 intra-op thread and 1 BLAS thread per usable core (" + std::to_string(cores) +
                    "): the fastest setting measured here (benchmarks/README.md)";
    if (requested_intra_op > 0 || requested_blas > 0) choice.reason = "partly set in the config; rest: " + choice.reason;
  }
  return choice;
}

void apply_threads(const ThreadChoice& choice) {
  at::set_num_threads(choice.intra_op_threads);
  set_blas_threads(choice.blas_threads);
}

int intra_op_threads() { return at::get_num_threads(); }

}  // namespace pipetrain
