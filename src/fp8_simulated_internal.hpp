// Internal entry points of the fp8_simulated family, shared by src/fp8_simulated.cpp, src/nn_linear_fp8_simulated.cpp and the
// benchmark: the FP8 matmul core with B optionally held transposed (a Linear's weight, so no
// transposed copy is made). Its GEMMs are detail::gemm_into (src/gemm.hpp).
#pragma once
#include <string_view>

#include "octet/fp8_simulated.hpp"

namespace octet::detail {

enum class Fp8Variant { mixed, global };

// bitsandbytes' pick(f) of get_block_sizes; f <= 0 gives 64 (upstream raises IndexError).
int64_t fp8_pick_block_size(int64_t f);

struct Fp8Args {
  std::string_view op, a_name = "A", b_name = "B";
  Fp8Variant variant = Fp8Variant::mixed;
  bool b_transposed = false;  // B given as (N, K): computes A @ B^T (the weight of a Linear)
  int64_t bsz = -1, bsz2 = -1;
  Fp8Product product = Fp8Product::simulated;
};
// matmul_fp8_mixed / matmul_fp8_global (A @ B, or A @ B^T when b_transposed), differentiable.
Tensor fp8_matmul(const Fp8Args& args, const Tensor& A, const Tensor& B, const Code& fw_code, const Code& bw_code);
// Whether the mixed forward of A @ B (B^T when b_transposed) runs on FP8 tensor cores
// (Fp8Product::tensor_cores; fp8_simulated.hpp lists the conditions); bsz as passed (-1: picked).
bool fp8_tensor_core_forward(const Tensor& A, const Tensor& B, bool b_transposed, const Code& fw_code, int64_t bsz);
// The scales of the tensor-core FP8 GEMM below (cuBLASLt scale modes, compute capability 9.0):
// - outer: a_scale (M) per row of a, b_scale (N) per row of b (OUTER_VEC_32F);
// - block128: a_scale (K / 128, M) per 128 consecutive elements of a row of a, M fastest
//   (VEC128_32F), b_scale (N / 128, K / 128) per 128 x 128 block of b, K fastest (BLK128x128_32F);
//   N and K multiples of 128.
enum class Fp8GemmScales { outer, block128 };
// out (M, N)[i, j] = sum_k a[i, k] b[j, k] * (scales of a[i, k] and b[j, k]) on FP8 tensor cores
// (no fast accumulation): a (M, K) and b (N, K) FP8, f32 scales as above, out (M, N) f16, bf16 or
// f32, all contiguous and 16-byte aligned on one CUDA device, M, N, K multiples of 16.
// fp8_gemm_scaled_available says whether cuBLASLt has an algorithm for it (the plan is cached);
// fp8_gemm_scaled_into throws if not.
bool fp8_gemm_scaled_available(Fp8GemmScales scales, Device device, int64_t m, int64_t n, int64_t k, DType a, DType b,
                               DType out);
void fp8_gemm_scaled_into(Fp8GemmScales scales, const Tensor& a, const Tensor& b, const Tensor& a_scale,
                          const Tensor& b_scale, Tensor& out);

}  // namespace octet::detail
