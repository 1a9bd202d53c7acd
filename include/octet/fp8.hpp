// bitsandbytes' research FP8 matmuls (simulated FP8: operands are quantized with 8-bit FP8-like
// code tables and dequantized, then multiplied with a 16/32-bit GEMM), forward and backward as
// bitsandbytes 0.49.2 (docs/semantics.md section 5). Differentiable.
// C = A @ B with A (M, K) or (b, M, K), B (K, N); A and B share a dtype (f16, bf16, f32).
#pragma once
#include <utility>

#include "octet/quant.hpp"
#include "octet/tensor.hpp"

namespace octet {

// bitsandbytes' get_block_sizes(A, B): (bsz for A's blocks, bsz2 for grad_output's blocks).
std::pair<int64_t, int64_t> fp8_block_sizes(const Tensor& A, const Tensor& B);

// Forward: A blockwise (fw_code, bsz), B global (fw_code). Backward: G blockwise (bw_code,
// bsz2); grad_A = Gq @ Bq^T; grad_B = A^T @ G (unquantized, as upstream). bsz/bsz2 = -1: picked.
Tensor matmul_fp8_mixed(const Tensor& A, const Tensor& B, const Code& fw_code, const Code& bw_code,
                        int64_t bsz = -1, int64_t bsz2 = -1);
// Forward: A and B global (fw_code). Backward: G global (bw_code); grad_B from A^T quantized
// globally with fw_code.
Tensor matmul_fp8_global(const Tensor& A, const Tensor& B, const Code& fw_code, const Code& bw_code);

}  // namespace octet
