#include "runtime/tools/doctor.h"

#include "memory/units.h"
#include "runtime/backends/cpu/memory_bandwidth.h"
#include "runtime/tools/calibration.h"
#include "runtime/tools/profile.h"

#include <torch/cuda.h>
#include <torch/version.h>

#include <chrono>
#include <cstdlib>
#include <dirent.h>
#include <fstream>
#include <sstream>

namespace pipetrain {
namespace {

std::string trim(std::string s) {
  const auto begin = s.find_first_not_of(" \t\r\n");
  const auto end = s.find_last_not_of(" \t\r\n");
  return begin == std::string::npos ? "" : s.substr(begin, end - begin + 1);
}

}  // namespace

double measure_matmul_gflops(const ThreadChoice& threads, double seconds_wanted) {
  constexpr int64_t kN = 1024;
  apply_threads(threads);
  torch::NoGradGuard no_grad;
  const torch::Tensor a = torch::rand({kN, kN});
  const torch::Tensor b = torch::rand({kN, kN});
  torch::Tensor c = torch::matmul(a, b);  // warm-up: first call pays for thread start-up
  int64_t calls = 0;
  const auto start = std::chrono::steady_clock::now();
  double seconds = 0.0;
  while (seconds < seconds_wanted) {
    c = torch::matmul(a, b);
    ++calls;
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  return 2.0 * kN * kN * kN * static_cast<double>(calls) / seconds / 1e9;
}

std::vector<GpuInfo> probe_driver_gpus() {
  std::vector<GpuInfo> gpus;
  // nvidia-smi gives names and memory; fall back to the driver's /proc entries (names only).
  if (std::FILE* pipe = popen("nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits 2>/dev/null", "r")) {
    char line[512];
    while (std::fgets(line, sizeof(line), pipe) != nullptr) {
      std::string text = line;
      const auto comma = text.rfind(',');
      if (comma == std::string::npos) continue;
      GpuInfo gpu;
      gpu.name = trim(text.substr(0, comma));
      gpu.memory_bytes = std::atoll(trim(text.substr(comma + 1)).c_str()) * 1024 * 1024;
      gpus.push_back(gpu);
    }
    pclose(pipe);
  }
  if (!gpus.empty()) return gpus;
  if (DIR* dir = opendir("/proc/driver/nvidia/gpus")) {
    while (dirent* entry = readdir(dir)) {
      if (entry->d_name[0] == '.') continue;
      std::ifstream info(std::string("/proc/driver/nvidia/gpus/") + entry->d_name + "/information");
      std::string line;
      GpuInfo gpu{"NVIDIA GPU", -1};
      while (std::getline(info, line)) {
        if (line.rfind("Model:", 0) == 0) gpu.name = trim(line.substr(6));
      }
      gpus.push_back(gpu);
    }
    closedir(dir);
  }
  return gpus;
}

DoctorReport examine_machine(const ThreadChoice& threads) {
  DoctorReport r;
  r.libtorch_version = TORCH_VERSION;
  r.libtorch_has_cuda = torch::cuda::is_available();
  r.cuda_devices = r.libtorch_has_cuda ? static_cast<int>(torch::cuda::device_count()) : 0;
  r.gpus = probe_driver_gpus();
  r.blas = detect_blas();
  r.usable_cores = usable_cores();
  r.threads = threads;
  apply_threads(threads);
  r.blas_threads_in_effect = blas_threads();
  r.intra_op_threads_in_effect = intra_op_threads();
  r.memory = probe_machine_memory();
  // The triad before the matmul: after one, OpenBLAS's idle threads spin for a while and take cores.
  r.triad_gb_per_s = measure_triad_bytes_per_s(r.usable_cores, 0.3) / 1e9;
  r.calibration = measure_cpu_calibration(r.usable_cores, kProfileCalibrationSeconds);
  r.matmul_gflops = measure_matmul_gflops(threads, 1.0);
  if (r.calibration.unsteadiness > kUnsteadyFraction) {
    r.warnings.push_back(unsteadiness_message(r.calibration).substr(std::string("calibration: ").size()));
  }
  if (r.calibration.core_spread() > kCoresDifferFraction) {
    r.warnings.push_back("the cores do not run at one speed: a training block alone on one core took " +
                         core_times(r.calibration) +
                         ". A one-core stage's time depends on which core it gets; predictions of one-core stages are off "
                         "by up to the difference (a virtual machine's vCPUs can share physical cores with other work)");
  }

  if (!r.gpus.empty() && !r.libtorch_has_cuda) {
    r.warnings.push_back("the driver shows " + std::to_string(r.gpus.size()) +
                         " GPU(s) but this LibTorch has no CUDA: GPU stages cannot run. Build against a CUDA "
                         "LibTorch (the one inside an installed PyTorch: see README.md, 'GPU build').");
  }
  if (r.blas.is_reference) {
    r.warnings.push_back("BLAS is the slow reference implementation (" + r.blas.library +
                         "; 3.5 GFLOP/s against 52.6 with OpenBLAS on the development machines). Fix: "
                         "apt-get install libopenblas0-pthread");
  } else if (!r.blas.can_set_threads) {
    r.warnings.push_back("the BLAS in use (" + r.blas.name + ", " + r.blas.library +
                         ") offers no thread control: pipetrain cannot keep it from oversubscribing the cores");
  }
  const int want = threads.intra_op_threads * std::max(1, threads.blas_threads);
  if (want > r.usable_cores) {
    r.warnings.push_back("thread oversubscription: " + std::to_string(threads.intra_op_threads) + " intra-op x " +
                         std::to_string(threads.blas_threads) + " BLAS threads = " + std::to_string(want) +
                         " on " + std::to_string(r.usable_cores) + " usable cores (measured here: 2 x 2 trained 2.3x "
                         "slower than 1 x 2); leave train.intra_op_threads and train.blas_threads at 0");
  }
  for (const char* var : {"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"}) {
    if (const char* value = std::getenv(var)) {
      r.warnings.push_back(std::string(var) + "=" + value + " is set; pipetrain sets its thread counts itself and " +
                           "overrides it for the pools it controls");
    }
  }
  if (r.memory.swap_total_bytes > 0) {
    r.warnings.push_back("swap of " + format_gib(r.memory.swap_total_bytes) +
                         " is present; plans never count on it (a training step that swaps runs orders of magnitude "
                         "slower)");
  }
  return r;
}

void print_report(const DoctorReport& r, std::FILE* out) {
  std::fprintf(out, "pipetrain doctor\n\n");
  std::fprintf(out, "LibTorch        %s, %s\n", r.libtorch_version.c_str(),
               r.libtorch_has_cuda ? ("CUDA available, " + std::to_string(r.cuda_devices) + " device(s)").c_str()
                                   : "no CUDA (CPU only)");
  if (r.gpus.empty()) {
    std::fprintf(out, "GPUs            none visible to the driver\n");
  } else {
    for (size_t i = 0; i < r.gpus.size(); ++i) {
      std::fprintf(out, "GPU %zu           %s, %s\n", i, r.gpus[i].name.c_str(),
                   r.gpus[i].memory_bytes > 0 ? format_gib(r.gpus[i].memory_bytes).c_str() : "memory unknown");
    }
  }
  std::fprintf(out, "BLAS            %s (%s)\n", r.blas.name.c_str(), r.blas.library.empty() ? "?" : r.blas.library.c_str());
  if (!r.blas.config.empty()) std::fprintf(out, "                %s\n", r.blas.config.c_str());
  std::fprintf(out, "matmul check    %.1f GFLOP/s (1024^3 float32, about 1 s, with the threads below)\n",
               r.matmul_gflops);
  std::fprintf(out, "memory triad    %.1f GB/s (STREAM's a = b + s c over 3 x 64 MiB, all usable cores)\n",
               r.triad_gb_per_s);
  std::fprintf(out, "training block  %.2f ms on all cores; alone on one core: %s, repetitions up to %.0f%% apart (forward "
               "and backward, the profile's calibration)\n", r.calibration.all_cores_seconds * 1e3,
               core_times(r.calibration).c_str(), 100.0 * r.calibration.unsteadiness);
  std::fprintf(out, "cores           %d usable\n", r.usable_cores);
  std::fprintf(out, "threads         %d intra-op, %d BLAS: %s\n", r.intra_op_threads_in_effect,
               r.blas_threads_in_effect, r.threads.reason.c_str());
  const MachineMemory& m = r.memory;
  std::fprintf(out, "RAM             %s total, %s available\n", format_gib(m.ram_total_bytes).c_str(),
               format_gib(m.ram_available_bytes).c_str());
  std::fprintf(out, "swap            %s total, %s free\n", format_gib(std::max<int64_t>(0, m.swap_total_bytes)).c_str(),
               format_gib(std::max<int64_t>(0, m.swap_free_bytes)).c_str());
  if (m.cgroup_limit_bytes > 0) {
    std::fprintf(out, "cgroup limit    %s (using %s)\n", format_gib(m.cgroup_limit_bytes).c_str(),
                 format_gib(std::max<int64_t>(0, m.cgroup_usage_bytes)).c_str());
  } else {
    std::fprintf(out, "cgroup limit    none\n");
  }
  std::fprintf(out, "\n");
  if (r.warnings.empty()) {
    std::fprintf(out, "No problems found.\n");
  } else {
    for (const std::string& w : r.warnings) std::fprintf(out, "warning: %s\n", w.c_str());
  }
}

}  // namespace pipetrain
