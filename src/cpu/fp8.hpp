// CPU reference of the fp8 family's GEMM with transposed operands (row-major buffers).
// The fake-quantization itself is the quant family's (src/cpu/quant.cpp).
#pragma once
#include <cstdint>

#include "octet/dtype.hpp"

namespace octet::cpu {

// out(M,N) = op(a) op(b): op(a) is (M,K) stored as a (M,K), or as a (K,M) when trans_a;
// op(b) is (K,N) stored as b (K,N), or as b (N,K) when trans_b. f32 accumulation as cpu::matmul.
void gemm_t(DType t, const void* a, bool trans_a, const void* b, bool trans_b, void* out, int64_t m, int64_t n,
            int64_t k);

}  // namespace octet::cpu
