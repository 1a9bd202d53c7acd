// Internal parts of the fp8_gemm family shared by its three units: the argument checks of
// src/fp8_gemm_cast.cpp and src/fp8_gemm.cpp, and the cuBLASLt plan cache and autotuner of
// src/fp8_gemm_plan.cpp that src/fp8_gemm.cpp dispatches to.
#pragma once
#include <cublasLt.h>

#include <cstdint>
#include <initializer_list>
#include <mutex>
#include <vector>

#include "octet/fp8_gemm.hpp"
#include "src/check.hpp"

namespace octet::fp8_gemm_internal {

inline constexpr std::initializer_list<DType> kFp8 = {DType::f8_e4m3, DType::f8_e5m2};
inline constexpr std::initializer_list<DType> kHigh = {DType::f32, DType::f16, DType::bf16};

inline void check_fp8_dtype(const char* op, const char* arg, DType t) {
  if (t != DType::f8_e4m3 && t != DType::f8_e5m2) fail_arg(op, arg, check::dtypes_str(kFp8), dtype_name(t));
}

// A one-element f32 tensor on `device` (scales, amax slots).
inline void check_scalar(const char* op, const char* arg, const Tensor& t, Device device) {
  check::defined(op, arg, t);
  check::dtype_is(op, arg, t, DType::f32);
  check::device_is(op, arg, t, device);
  if (t.numel() != 1) fail_arg(op, arg, "a one-element f32 tensor", cat("shape ", shape_str(t.shape())));
}

// The value of a CPU scalar.
inline float host_scalar(const Tensor& t) { return *static_cast<const float*>(t.data()); }

// Rows of t viewed as (rows, last dim): the product of the leading dims (1 for a 0-dim t).
inline int64_t rows_of(const Tensor& t) {
  return t.dim() == 0 ? 1 : shape_numel(Shape(t.shape().begin(), t.shape().end() - 1));
}

// The largest power of two up to 256 that divides p's address.
uint32_t alignment(const void* p);

// ---- cuBLASLt plans (src/fp8_gemm_plan.cpp) ---------------------------------------------------
// Layout mapping: cuBLASLt is column-major and FP8 needs "TN" (A transposed, B not). A row-major
// (r, c) buffer is a column-major (c, r) matrix, so with our a (M, K) and b (N, K) both K-major:
//   cuBLASLt A = b as K x N (ld K), op T;  B = a as K x M (ld K), op N;  D = out as N x M (ld N),
// i.e. D^T = out (M, N) row-major = a b^T. A_SCALE is b's dequant factor, B_SCALE is a's; the BIAS
// epilogue adds bias[N] along D's rows (out's columns).

struct PlanKey {
  int device;
  int64_t m, n, k;
  DType a, b, out;
  bool bias, fast, tune;
  uint32_t align_a, align_b;
  int scales = 0;  // 0: scalars; 1 + detail::Fp8GemmScales: vector or block scales
  auto operator<=>(const PlanKey&) const = default;
};

// A cached cuBLASLt matmul: descriptors, layouts, the heuristic's choice and the autotune state.
struct Plan {
  std::mutex mu;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, ld = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool ok = false;
  enum class Tune { off, pending, timing, done } tune = Tune::off;
  std::vector<cublasLtMatmulAlgo_t> candidates;  // the heuristic's answers, best first
  std::vector<bool> runs;                        // candidate i ran without error
  std::vector<cudaEvent_t> events;               // candidates.size() + 1 marks of the timed pass
};

// Problems of at least this many multiply-adds are autotuned when the autotune is on.
inline constexpr int64_t kTuneMinMacs = int64_t{1} << 30;
bool autotune_on();

// The plan of key, made on first use (a heuristic query; plan.ok false when cuBLASLt has no
// algorithm) and kept for the process, under a mutex.
Plan& plan_for(const PlanKey& key);
// out = a b^T through plan on dev's current stream (scale_a, scale_b: device scalars or vectors
// as the plan's key says; bias may be null). Takes the plan's own mutex for setting its pointers
// and the enqueue; runs the autotune's bookkeeping first when the plan is tuned.
void run_plan(Plan& plan, Device dev, const void* a, const void* b, const Tensor& scale_a, const Tensor& scale_b,
              const void* bias, Tensor& out);
// Compute capability of cuda:index as major * 10 + minor (queried once per device).
int compute_capability(int index);

}  // namespace octet::fp8_gemm_internal
