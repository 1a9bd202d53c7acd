// Internal row-major GEMM with transpose flags, shared by the core ops and the fp8_simulated family
// (defined in src/ops.cpp; no autograd, no validation).
#pragma once
#include <cstdint>

#include "octet/tensor.hpp"

namespace octet::detail {

// out(M,N) = op(a) op(b) on a's device, a, b, out contiguous of one dtype (f32, f64, f16, bf16).
// op(a) is a stored (M,K), or with ta a^T of a stored (K,M); op(b) is b stored (K,N), or with tb
// b^T of a stored (N,K). cuBLAS with f32 accumulation (TF32 off); K = 0 gives zeros.
void gemm_into(const Tensor& a, const Tensor& b, Tensor& out, int64_t m, int64_t k, int64_t n, bool ta = false,
               bool tb = false);

}  // namespace octet::detail
