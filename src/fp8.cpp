// Dispatch and validation of the fp8 family (fp8.hpp): bitsandbytes' simulated FP8 matmuls.
// Conventions (spec section 5, DESIGN differences):
// - An operand is "fake-quantized" (quantize + dequantize, fused in one pass by the quant family)
//   on a detached tensor; the product is one row-major GEMM over all rows of A (3-D A flattened),
//   so grad_B of a 3-D A is summed over the batch by the GEMM itself.
// - No transposed copies: Bq^T, A^T and (for a Linear) W^T are transpose flags of the GEMM.
// - Global variant: fake_quantize(A^T) == fake_quantize(A)^T (one absmax, elementwise), so the
//   backward reuses the forward's Aq instead of re-quantizing A^T.
// - Empty A or B skips quantization: the result is empty, or zeros when K = 0; gradients are
//   zeros of the inputs' shapes.
#include "octet/fp8.hpp"

#include <cstdint>

#include "octet/autograd.hpp"
#include "src/check.hpp"
#include "src/cpu/fp8.hpp"
#include "src/cuda_check.hpp"
#include "src/fp8_internal.hpp"
#include "src/runtime_internal.hpp"

namespace octet {
namespace detail {
namespace {

void check_block_size(std::string_view op, std::string_view arg, int64_t v) {
  if (v == -1 || (v >= 32 && v <= 4096 && (v & (v - 1)) == 0)) return;
  fail_arg(op, arg, "-1 (pick from the shapes) or a power of two in [32, 4096]", cat(v));
}

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::f32: return CUDA_R_32F;
    case DType::f64: return CUDA_R_64F;
    case DType::f16: return CUDA_R_16F;
    default: return CUDA_R_16BF;
  }
}

}  // namespace

int64_t fp8_pick_block_size(int64_t f) {
  // The first of 4096, 2048, ..., 64 whose successor (2048, ..., 64, 0) is below f.
  int64_t s = 4096;
  while (s > 64 && s / 2 >= f) s /= 2;
  return s;
}

void gemm_t(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& out, int64_t m, int64_t n,
            int64_t k) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    out.fill_(0.0);
    return;
  }
  if (a.device().is_cpu()) {
    cpu::gemm_t(a.dtype(), a.data(), trans_a, b.data(), trans_b, out.data(), m, n, k);
    return;
  }
  OCTET_CHECK(m <= INT32_MAX && k <= INT32_MAX && n <= INT32_MAX, "gemm",
              "each of M, K, N must be below 2^31 for cuBLAS, got ", m, ", ", k, ", ", n);
  DeviceGuard g(a.device());
  const cudaDataType_t t = cuda_type(a.dtype());
  const bool f64 = a.dtype() == DType::f64;
  const float one_f = 1.0f, zero_f = 0.0f;
  const double one_d = 1.0, zero_d = 0.0;
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T; a row-major (r, c) buffer
  // is a column-major (c, r) matrix with leading dimension c.
  const int lda = static_cast<int>(trans_a ? m : k), ldb = static_cast<int>(trans_b ? k : n);
  OCTET_CUBLAS_CHECK(cublasGemmEx(cublas_handle(a.device()), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                  trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m),
                                  static_cast<int>(k), f64 ? static_cast<const void*>(&one_d) : &one_f, b.data(), t,
                                  ldb, a.data(), t, lda, f64 ? static_cast<const void*>(&zero_d) : &zero_f,
                                  out.data(), t, static_cast<int>(n), f64 ? CUBLAS_COMPUTE_64F : CUBLAS_COMPUTE_32F,
                                  CUBLAS_GEMM_DEFAULT));
}

Tensor fp8_matmul(const Fp8Args& p, const Tensor& A, const Tensor& B, const Code& fw_code, const Code& bw_code) {
  check::dtype_in(p.op, p.a_name, A, {DType::f32, DType::f16, DType::bf16});
  check::dim_in(p.op, p.a_name, A, 2, 3);
  check::dtype_is(p.op, p.b_name, B, A.dtype());
  check::device_is(p.op, p.b_name, B, A.device());
  check::dim_in(p.op, p.b_name, B, 2, 2);
  const int64_t k = A.size(-1);
  if ((p.b_transposed ? B.size(1) : B.size(0)) != k)
    fail_arg(p.op, p.b_name,
             cat("shape ", p.b_transposed ? cat("(N, ", k, ")") : cat("(", k, ", N)"), " to match ", p.a_name, " ",
                 shape_str(A.shape())),
             cat("shape ", shape_str(B.shape())));
  check_block_size(p.op, "bsz", p.bsz);
  check_block_size(p.op, "bsz2", p.bsz2);

  const int64_t n = p.b_transposed ? B.size(0) : B.size(1);
  Shape out_shape(A.shape().begin(), A.shape().end() - 1);
  const int64_t rows = shape_numel(out_shape);
  out_shape.push_back(n);
  const bool mixed = p.variant == Fp8Variant::mixed;
  const int64_t bsz = p.bsz == -1 ? fp8_pick_block_size(k) : p.bsz;
  const int64_t bsz2 = p.bsz2 == -1 ? fp8_pick_block_size(n) : p.bsz2;
  const bool empty = A.numel() == 0 || B.numel() == 0;

  Tensor out, Aq, Bq;
  if (empty) {
    out = Tensor::zeros(out_shape, A.dtype(), A.device());
  } else {
    Aq = mixed ? fake_quantize_blockwise(A.detach(), fw_code, bsz) : fake_quantize(A.detach(), fw_code);
    Bq = fake_quantize(B.detach(), fw_code);
    out = Tensor::empty(out_shape, A.dtype(), A.device());
    gemm_t(Aq, false, Bq, p.b_transposed, out, rows, n, k);
  }
  if (!autograd::needs_grad({A, B})) return out;

  const bool need_a = A.requires_grad(), need_b = B.requires_grad(), bt = p.b_transposed;
  const Shape a_shape = A.shape(), b_shape = B.shape();
  const DType dtype = A.dtype();
  const Device device = A.device();
  // Saved only when needed: Bq for grad_A; for grad_B the unquantized A (mixed) or Aq (global).
  // SavedTensor makes the backward throw if A was written in place since the forward.
  const char* name = p.variant == Fp8Variant::mixed ? "matmul_fp8_mixed" : "matmul_fp8_global";
  autograd::SavedTensor saved_a(need_b ? (mixed ? A : Aq) : Tensor(), name), saved_bq(need_a ? Bq : Tensor(), name);
  autograd::record(std::string(p.op), {A, B}, out, [=](const Tensor& g) {
    Tensor ga, gb;
    if (empty) {
      if (need_a) ga = Tensor::zeros(a_shape, dtype, device);
      if (need_b) gb = Tensor::zeros(b_shape, dtype, device);
      return std::vector<Tensor>{ga, gb};
    }
    const Tensor gq = mixed ? fake_quantize_blockwise(g, bw_code, bsz2) : fake_quantize(g, bw_code);
    if (need_a) {  // (rows, N) x Bq^T
      ga = Tensor::empty(a_shape, dtype, device);
      gemm_t(gq, false, saved_bq.get(), !bt, ga, rows, k, n);
    }
    if (need_b) {
      const Tensor& x = saved_a.get();
      const Tensor& h = mixed ? g : gq;
      gb = Tensor::empty(b_shape, dtype, device);
      if (bt) gemm_t(h, true, x, false, gb, n, k, rows);  // (N, K) = H^T X
      else gemm_t(x, true, h, false, gb, k, n, rows);     // (K, N) = X^T H
    }
    return std::vector<Tensor>{ga, gb};
  });
  return out;
}

}  // namespace detail

std::pair<int64_t, int64_t> fp8_block_sizes(const Tensor& A, const Tensor& B) {
  check::dim_in("fp8_block_sizes", "A", A, 1, 8);
  check::dim_in("fp8_block_sizes", "B", B, 2, 2);
  const int64_t in_f = A.size(-1);
  const int64_t out_f = B.size(1) == in_f ? B.size(0) : B.size(1);
  return {detail::fp8_pick_block_size(in_f), detail::fp8_pick_block_size(out_f)};
}

Tensor matmul_fp8_mixed(const Tensor& A, const Tensor& B, const Code& fw_code, const Code& bw_code, int64_t bsz,
                        int64_t bsz2) {
  detail::Fp8Args p{.op = "matmul_fp8_mixed", .variant = detail::Fp8Variant::mixed, .bsz = bsz, .bsz2 = bsz2};
  return detail::fp8_matmul(p, A, B, fw_code, bw_code);
}

Tensor matmul_fp8_global(const Tensor& A, const Tensor& B, const Code& fw_code, const Code& bw_code) {
  detail::Fp8Args p{.op = "matmul_fp8_global", .variant = detail::Fp8Variant::global};
  return detail::fp8_matmul(p, A, B, fw_code, bw_code);
}

}  // namespace octet
