// Checking macros for CUDA runtime, cuBLAS(Lt) and cuRAND return codes and kernel launches.
// Each failure throws octet::Error naming the call, the status and the source location.
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <curand.h>

namespace octet::detail {
[[noreturn]] void cuda_fail(const char* what, cudaError_t e, const char* file, int line);
[[noreturn]] void cublas_fail(const char* what, cublasStatus_t s, const char* file, int line);
[[noreturn]] void curand_fail(const char* what, curandStatus_t s, const char* file, int line);
}  // namespace octet::detail

#define OCTET_CUDA_CHECK(expr)                                                         \
  do {                                                                                 \
    cudaError_t octet_e_ = (expr);                                                     \
    if (octet_e_ != cudaSuccess) ::octet::detail::cuda_fail(#expr, octet_e_, __FILE__, __LINE__); \
  } while (0)
#define OCTET_CUBLAS_CHECK(expr)                                                       \
  do {                                                                                 \
    cublasStatus_t octet_s_ = (expr);                                                  \
    if (octet_s_ != CUBLAS_STATUS_SUCCESS)                                             \
      ::octet::detail::cublas_fail(#expr, octet_s_, __FILE__, __LINE__);               \
  } while (0)
#define OCTET_CURAND_CHECK(expr)                                                       \
  do {                                                                                 \
    curandStatus_t octet_s_ = (expr);                                                  \
    if (octet_s_ != CURAND_STATUS_SUCCESS)                                             \
      ::octet::detail::curand_fail(#expr, octet_s_, __FILE__, __LINE__);               \
  } while (0)
// After every kernel launch: a bad configuration or a sticky error surfaces here.
#define OCTET_LAUNCH_CHECK(kernel_name)                                                \
  do {                                                                                 \
    cudaError_t octet_e_ = cudaGetLastError();                                         \
    if (octet_e_ != cudaSuccess)                                                       \
      ::octet::detail::cuda_fail("launch of " kernel_name, octet_e_, __FILE__, __LINE__); \
  } while (0)
