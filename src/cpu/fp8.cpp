// CPU reference of the fp8 family: the GEMM with transposed operands used by the FP8 matmuls'
// backward (and by the FP8 linear layers, whose weight is B transposed). Transposed operands are
// materialized into scratch buffers and multiplied with cpu::matmul, so results equal
// matmul(a.t(), b) bit for bit. Quantization is the quant family's CPU code.
#include "src/cpu/fp8.hpp"

#include <vector>

#include "src/cpu/ops.hpp"

namespace octet::cpu {

void gemm_t(DType t, const void* a, bool trans_a, const void* b, bool trans_b, void* out, int64_t m, int64_t n,
            int64_t k) {
  const size_t es = dtype_size(t);
  std::vector<unsigned char> at, bt;
  if (trans_a) {
    at.resize(static_cast<size_t>(m * k) * es);
    transpose2d(a, at.data(), k, m, es);
    a = at.data();
  }
  if (trans_b) {
    bt.resize(static_cast<size_t>(k * n) * es);
    transpose2d(b, bt.data(), n, k, es);
    b = bt.data();
  }
  matmul(t, a, b, out, m, k, n);
}

}  // namespace octet::cpu
