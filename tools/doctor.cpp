// octet doctor: what this machine offers (devices, compute capability, memory, driver /
// runtime / cuBLAS versions, FP8 tensor cores) and how this octet was built.
#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstdio>

#include "octet/octet.hpp"
#include "octet_build_config.h"
#include "tools/commands.hpp"

namespace octet::cli {

int doctor(const Args&) {
  std::printf("octet %s (build: %s, cudart %s, gpu_archs '%s')\n", OCTET_VERSION, OCTET_BUILDTYPE, OCTET_CUDART,
              OCTET_GPU_ARCHS);
  int runtime = 0, driver = 0;
  cudaRuntimeGetVersion(&runtime);
  if (cudaDriverGetVersion(&driver) != cudaSuccess) driver = 0;
  (void)cudaGetLastError();
  std::printf("CUDA runtime %d.%d, driver %s\n", runtime / 1000, (runtime % 1000) / 10,
              driver ? (std::to_string(driver / 1000) + "." + std::to_string((driver % 1000) / 10)).c_str() : "none");
  const size_t lt = cublasLtGetVersion();
  std::printf("cuBLASLt %zu.%zu.%zu\n", lt / 10000, (lt / 100) % 100, lt % 100);
  const int n = cuda_device_count();
  std::printf("CUDA devices: %d%s\n", n, n == 0 ? " (ops run on the CPU; octet needs no GPU)" : "");
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
    const int cc = p.major * 10 + p.minor;
    const bool fp8 = cc >= 89;
    std::printf("  cuda:%d  %s  sm_%d%d  %d SMs  %.1f GiB  L2 %.0f MiB  FP8 tensor cores: %s\n", i, p.name, p.major,
                p.minor, p.multiProcessorCount, static_cast<double>(p.totalGlobalMem) / (1 << 30),
                static_cast<double>(p.l2CacheSize) / (1 << 20), fp8 ? "yes" : "no (needs sm_89 or newer)");
  }
  std::printf("default device: %s\n", default_device().str().c_str());
  return 0;
}

}  // namespace octet::cli
