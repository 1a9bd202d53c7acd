// Internal entry points of the fp8 family, shared by src/fp8.cpp, src/nn_fp8.cpp and the
// benchmark: the FP8 matmul core with B optionally held transposed (a Linear's weight, so no
// transposed copy is made), and the row-major GEMM with transpose flags it runs on.
#pragma once
#include <string_view>

#include "octet/fp8.hpp"

namespace octet::detail {

enum class Fp8Variant { mixed, global };

// bitsandbytes' pick(f) of get_block_sizes; f <= 0 gives 64 (upstream raises IndexError).
int64_t fp8_pick_block_size(int64_t f);

// out(M,N) = op(a) op(b) on a's device, no autograd: op(a) is (M,K) held as a (M,K) or, with
// trans_a, as (K,M); op(b) is (K,N) held as b (K,N) or, with trans_b, as (N,K). a, b, out are
// contiguous of one dtype (f32, f16, bf16, f64); cuBLAS with f32 accumulation on CUDA (TF32 off).
void gemm_t(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& out, int64_t m, int64_t n,
            int64_t k);

struct Fp8Args {
  std::string_view op, a_name = "A", b_name = "B";
  Fp8Variant variant = Fp8Variant::mixed;
  bool b_transposed = false;  // B given as (N, K): computes A @ B^T (the weight of a Linear)
  int64_t bsz = -1, bsz2 = -1;
};
// matmul_fp8_mixed / matmul_fp8_global (A @ B, or A @ B^T when b_transposed), differentiable.
Tensor fp8_matmul(const Fp8Args& args, const Tensor& A, const Tensor& B, const Code& fw_code, const Code& bw_code);

}  // namespace octet::detail
