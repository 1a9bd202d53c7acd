// Internal entry points of the fp8 family, shared by src/fp8.cpp, src/nn_fp8.cpp and the
// benchmark: the FP8 matmul core with B optionally held transposed (a Linear's weight, so no
// transposed copy is made). Its GEMMs are detail::gemm_into (src/gemm.hpp).
#pragma once
#include <string_view>

#include "octet/fp8.hpp"

namespace octet::detail {

enum class Fp8Variant { mixed, global };

// bitsandbytes' pick(f) of get_block_sizes; f <= 0 gives 64 (upstream raises IndexError).
int64_t fp8_pick_block_size(int64_t f);

struct Fp8Args {
  std::string_view op, a_name = "A", b_name = "B";
  Fp8Variant variant = Fp8Variant::mixed;
  bool b_transposed = false;  // B given as (N, K): computes A @ B^T (the weight of a Linear)
  int64_t bsz = -1, bsz2 = -1;
};
// matmul_fp8_mixed / matmul_fp8_global (A @ B, or A @ B^T when b_transposed), differentiable.
Tensor fp8_matmul(const Fp8Args& args, const Tensor& A, const Tensor& B, const Code& fw_code, const Code& bw_code);

}  // namespace octet::detail
