// bitsandbytes' research FP8 matmuls (simulated FP8: operands are quantized with 8-bit FP8-like
// code tables and dequantized, then multiplied with a 16/32-bit GEMM), forward and backward as
// bitsandbytes 0.49.2 (docs/semantics.md section 5). Differentiable.
// C = A @ B with A (M, K) or (b, M, K), B (K, N); A and B share a dtype (f16, bf16, f32) and a
// device. Intended codes: fw_code = Code::fp8_e4m3(), bw_code = Code::fp8_e5m2().
// Differences from bitsandbytes (DESIGN.md): empty inputs give empty results, or zeros when
// K = 0 (upstream: uninitialized memory), and zero gradients; for 3-D A, grad_B is summed over
// the batch here (upstream leaves that to torch autograd). See docs/fp8.md.
#pragma once
#include <utility>

#include "octet/quant.hpp"
#include "octet/tensor.hpp"

namespace octet {

// bitsandbytes' get_block_sizes(A, B): (bsz for A's blocks, bsz2 for grad_output's blocks).
// in_f = A.size(-1); out_f = B.size(0) if B.size(1) == in_f else B.size(1); pick(f) = the
// smallest of 64, 128, ..., 4096 that is >= f (4096 above 4096). f <= 0 gives 64 (upstream
// raises IndexError).
std::pair<int64_t, int64_t> fp8_block_sizes(const Tensor& A, const Tensor& B);

// Forward: A blockwise (fw_code, bsz) in A's dtype, B global (fw_code, via f32, cast back).
// Backward: G blockwise (bw_code, bsz2); grad_A = Gq @ Bq^T; grad_B = A^T @ G (unquantized, as
// upstream). bsz/bsz2 = -1: picked by fp8_block_sizes; otherwise a power of two in [32, 4096].
Tensor matmul_fp8_mixed(const Tensor& A, const Tensor& B, const Code& fw_code, const Code& bw_code,
                        int64_t bsz = -1, int64_t bsz2 = -1);
// Forward: A and B global (fw_code). Backward: G global (bw_code); grad_A = Gq @ Bq^T;
// grad_B = Atq @ Gq with Atq = A^T quantized globally with fw_code (= Aq^T).
Tensor matmul_fp8_global(const Tensor& A, const Tensor& B, const Code& fw_code, const Code& bw_code);

}  // namespace octet
