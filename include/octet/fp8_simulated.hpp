// bitsandbytes' research FP8 matmuls (simulated FP8: operands are quantized with 8-bit FP8-like
// code tables and dequantized, then multiplied with a 16/32-bit GEMM), forward and backward as
// bitsandbytes 0.49.2 (docs/fp8-simulated.md, "Forward and backward"). Differentiable.
// C = A @ B with A (M, K) or (b, M, K), B (K, N); A and B share a dtype (f16, bf16, f32) and a
// device. Intended codes: fw_code = Code::fp8_e4m3(), bw_code = Code::fp8_e5m2().
// Differences from bitsandbytes (docs/fp8-simulated.md, "Differences from bitsandbytes"): empty
// inputs give empty results, or zeros when K = 0 (upstream: uninitialized memory), and zero
// gradients; for 3-D A, grad_B is summed over the batch here (upstream leaves that to torch
// autograd).
#pragma once
#include <utility>

#include "octet/quant.hpp"
#include "octet/tensor.hpp"

namespace octet {

// bitsandbytes' get_block_sizes(A, B): (bsz for A's blocks, bsz2 for grad_output's blocks).
// in_f = A.size(-1); out_f = B.size(0) if B.size(1) == in_f else B.size(1); pick(f) = the
// smallest of 64, 128, ..., 4096 that is >= f (4096 above 4096). f <= 0 gives 64 (upstream
// raises IndexError). docs/fp8-simulated.md, "Block sizes".
std::pair<int64_t, int64_t> fp8_block_sizes(const Tensor& A, const Tensor& B);

// How matmul_fp8_mixed's forward multiplies the quantized operands.
// - simulated (default): as bitsandbytes, Aq and Bq are fake-quantized in A's dtype and
//   multiplied by a cuBLAS GEMM of that dtype.
// - tensor_cores: the same codes multiplied on FP8 tensor cores: A's blockwise codes and B's
//   global codes as E4M3 numbers (code * 240) with f32 scales from their absmax (cuBLASLt
//   per-row scales when A's blocks are its rows, per-128-element scales when its rows hold whole
//   blocks). The products are those of the codes' exact values (the fake values before their
//   rounding to A's dtype; codes below 2^-6 / 240 move to the nearest E4M3 number, at most 2^-10 /
//   240 of the block's absmax), accumulated by the tensor cores (within 2^-12 of sum |a b|; the
//   simulated product carries the f16/bf16 rounding of its operands instead; docs/fp8-simulated.md,
//   "Tensor-core product").
//   Taken where it applies: CUDA compute capability 9.0, f16/bf16, fw_code == Code::fp8_e4m3(),
//   M, N, K multiples of 16, B 16-byte aligned, and bsz == K, or K a multiple of bsz >= 128 with
//   N a multiple of 128 (with the picked bsz: K a power of two from 64 up, or a multiple of 4096).
//   Elsewhere (and on the CPU) the simulated forward runs; fp8_tensor_core_forward() says which.
//   The backward is the simulated one in both (Bq is made for it when A needs a gradient).
enum class Fp8Product { simulated, tensor_cores };

// Forward: A blockwise (fw_code, bsz) in A's dtype, B global (fw_code, via f32, cast back).
// Backward: G blockwise (bw_code, bsz2); grad_A = Gq @ Bq^T; grad_B = A^T @ G (unquantized, as
// upstream). bsz/bsz2 = -1: picked by fp8_block_sizes; otherwise a power of two in [32, 4096].
Tensor matmul_fp8_mixed(const Tensor& A, const Tensor& B, const Code& fw_code, const Code& bw_code,
                        int64_t bsz = -1, int64_t bsz2 = -1, Fp8Product product = Fp8Product::simulated);
// Whether matmul_fp8_mixed(A, B, fw_code, ..., bsz, ..., Fp8Product::tensor_cores) runs its
// forward on FP8 tensor cores (the conditions above). Validates nothing; false for bad input.
bool fp8_tensor_core_forward(const Tensor& A, const Tensor& B, const Code& fw_code, int64_t bsz = -1);
// Forward: A and B global (fw_code). Backward: G global (bw_code); grad_A = Gq @ Bq^T;
// grad_B = Atq @ Gq with Atq = A^T quantized globally with fw_code (= Aq^T).
Tensor matmul_fp8_global(const Tensor& A, const Tensor& B, const Code& fw_code, const Code& bw_code);

}  // namespace octet
