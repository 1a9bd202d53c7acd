// octet::Error helpers and the CUDA/cuBLAS/cuRAND failure messages.
#include "octet/error.hpp"

#include <string>

#include "src/cuda_check.hpp"

namespace octet {

void fail(std::string_view op, std::string_view message) {
  throw Error(cat(op, ": ", message));
}

void fail_arg(std::string_view op, std::string_view arg, std::string_view expected,
              std::string_view given) {
  throw Error(cat(op, ": argument '", arg, "': expected ", expected, ", got ", given));
}

namespace detail {

void cuda_fail(const char* what, cudaError_t e, const char* file, int line) {
  (void)cudaGetLastError();  // clear a non-sticky error so later calls are not blamed
  throw Error(cat("CUDA error ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ") in ", what,
                  " at ", file, ":", line));
}

void cublas_fail(const char* what, cublasStatus_t s, const char* file, int line) {
  throw Error(cat("cuBLAS error ", cublasGetStatusName(s), " (", cublasGetStatusString(s), ") in ",
                  what, " at ", file, ":", line));
}

static const char* curand_status_name(curandStatus_t s) {
  switch (s) {
    case CURAND_STATUS_VERSION_MISMATCH: return "CURAND_STATUS_VERSION_MISMATCH";
    case CURAND_STATUS_NOT_INITIALIZED: return "CURAND_STATUS_NOT_INITIALIZED";
    case CURAND_STATUS_ALLOCATION_FAILED: return "CURAND_STATUS_ALLOCATION_FAILED";
    case CURAND_STATUS_TYPE_ERROR: return "CURAND_STATUS_TYPE_ERROR";
    case CURAND_STATUS_OUT_OF_RANGE: return "CURAND_STATUS_OUT_OF_RANGE";
    case CURAND_STATUS_LENGTH_NOT_MULTIPLE: return "CURAND_STATUS_LENGTH_NOT_MULTIPLE";
    case CURAND_STATUS_DOUBLE_PRECISION_REQUIRED: return "CURAND_STATUS_DOUBLE_PRECISION_REQUIRED";
    case CURAND_STATUS_LAUNCH_FAILURE: return "CURAND_STATUS_LAUNCH_FAILURE";
    case CURAND_STATUS_PREEXISTING_FAILURE: return "CURAND_STATUS_PREEXISTING_FAILURE";
    case CURAND_STATUS_INITIALIZATION_FAILED: return "CURAND_STATUS_INITIALIZATION_FAILED";
    case CURAND_STATUS_ARCH_MISMATCH: return "CURAND_STATUS_ARCH_MISMATCH";
    case CURAND_STATUS_INTERNAL_ERROR: return "CURAND_STATUS_INTERNAL_ERROR";
    default: return "unknown cuRAND status";
  }
}

void curand_fail(const char* what, curandStatus_t s, const char* file, int line) {
  throw Error(cat("cuRAND error ", curand_status_name(s), " (", static_cast<int>(s), ") in ", what,
                  " at ", file, ":", line));
}

}  // namespace detail
}  // namespace octet
