// Dispatch and validation of the fp8_simulated family (fp8_simulated.hpp): bitsandbytes' simulated FP8 matmuls.
// What they compute: docs/fp8-simulated.md, "Forward and backward" and "Block sizes"; where they
// differ from bitsandbytes: docs/fp8-simulated.md, "Differences from bitsandbytes".
// - An operand is "fake-quantized" (quantize + dequantize, fused in one pass by the quant family)
//   on a detached tensor; the product is one row-major GEMM over all rows of A (3-D A flattened),
//   so grad_B of a 3-D A is summed over the batch by the GEMM itself.
// - No transposed copies: Bq^T, A^T and (for a Linear) W^T are transpose flags of the GEMM
//   (detail::gemm_into, src/gemm.hpp).
// - Global variant: fake_quantize(A^T) == fake_quantize(A)^T (one absmax, elementwise), so the
//   backward reuses the forward's Aq instead of re-quantizing A^T.
// - Empty A or B skips quantization: the result is empty, or zeros when K = 0; gradients are
//   zeros of the inputs' shapes.
// - On CUDA the mixed forward folds B's absmax pass into A's fake-quantize kernel (B without an
//   amax hint); otherwise independent fake-quantize passes run on two streams (A's, or G's
//   beside grad_B's GEMM, on the side stream of detail::fork_side_stream).
// - Fp8Product::tensor_cores (mixed forward only, where tensor_core_scales applies): E4M3 codes
//   of A and B (quant_internal::e4m3_operands, one pass each; B's written as (N, K): the FP8 GEMM
//   wants both operands K-major) into detail::fp8_gemm_scaled_into (docs/fp8-simulated.md,
//   "Tensor-core product").
#include "octet/fp8_simulated.hpp"

#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

#include "octet/autograd.hpp"
#include "src/amax_hint.hpp"
#include "src/check.hpp"
#include "src/cpu/quant.hpp"
#include "src/fp8_simulated_internal.hpp"
#include "src/gemm.hpp"
#include "src/runtime_internal.hpp"

namespace octet {
namespace detail {
namespace {

void check_block_size(std::string_view op, std::string_view arg, int64_t v) {
  if (v == -1 || (v >= 32 && v <= 4096 && (v & (v - 1)) == 0)) return;
  fail_arg(op, arg, "-1 (pick from the shapes) or a power of two in [32, 4096]", cat(v));
}

bool same_values(const Code& a, const Code& b) {
  const std::vector<float>&x = a.values(), &y = b.values();
  return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
}

// fake_quantize_blockwise(A, code, bs) (bs > 0) or fake_quantize(A, code) (bs == 0).
Tensor fake(const Tensor& A, const Code& code, int64_t bs) {
  return bs > 0 ? fake_quantize_blockwise(A, code, bs) : fake_quantize(A, code);
}

}  // namespace

int64_t fp8_pick_block_size(int64_t f) {
  // The first of 4096, 2048, ..., 64 whose successor (2048, ..., 64, 0) is below f.
  int64_t s = 4096;
  while (s > 64 && s / 2 >= f) s /= 2;
  return s;
}

namespace {

// The scales of the tensor-core forward of A @ B (B^T when b_transposed), if it applies: per row
// of A when its blocks are its rows (bs == K), per 128 elements when rows hold whole blocks of
// 128 or more (K % bs == 0).
std::optional<Fp8GemmScales> tensor_core_scales(const Tensor& A, const Tensor& B, bool b_transposed,
                                                const Code& fw_code, int64_t bsz) {
  if (!A.defined() || !B.defined() || !A.device().is_cuda() || B.device() != A.device()) return std::nullopt;
  if ((A.dtype() != DType::f16 && A.dtype() != DType::bf16) || B.dtype() != A.dtype()) return std::nullopt;
  if (A.dim() < 2 || A.dim() > 3 || B.dim() != 2) return std::nullopt;
  const int64_t k = A.size(-1), n = b_transposed ? B.size(0) : B.size(1);
  if ((b_transposed ? B.size(1) : B.size(0)) != k || k <= 0) return std::nullopt;
  const int64_t rows = A.numel() / k, bs = bsz == -1 ? fp8_pick_block_size(k) : bsz;
  if (rows <= 0 || n <= 0 || rows % 16 || n % 16 || k % 16) return std::nullopt;
  if (reinterpret_cast<uintptr_t>(B.data()) % 16 != 0) return std::nullopt;
  static const Code e4m3 = Code::fp8_e4m3();
  if (!same_values(fw_code, e4m3)) return std::nullopt;
  const Fp8GemmScales scales = bs == k ? Fp8GemmScales::outer : Fp8GemmScales::block128;
  if (scales == Fp8GemmScales::block128 && (k % bs != 0 || bs < 128)) return std::nullopt;
  if (!fp8_gemm_scaled_available(scales, A.device(), rows, n, k, DType::f8_e4m3, DType::f8_e4m3, A.dtype()))
    return std::nullopt;
  return scales;
}

}  // namespace

bool fp8_tensor_core_forward(const Tensor& A, const Tensor& B, bool b_transposed, const Code& fw_code, int64_t bsz) {
  return tensor_core_scales(A, B, b_transposed, fw_code, bsz).has_value();
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
  if (p.product != Fp8Product::simulated && p.product != Fp8Product::tensor_cores)
    fail_arg(p.op, "product", "Fp8Product::simulated or Fp8Product::tensor_cores",
             cat("the value ", static_cast<int>(p.product)));

  const int64_t n = p.b_transposed ? B.size(0) : B.size(1);
  Shape out_shape(A.shape().begin(), A.shape().end() - 1);
  const int64_t rows = shape_numel(out_shape);
  out_shape.push_back(n);
  const bool mixed = p.variant == Fp8Variant::mixed;
  const int64_t bsz = p.bsz == -1 ? fp8_pick_block_size(k) : p.bsz;
  const int64_t bsz2 = p.bsz2 == -1 ? fp8_pick_block_size(n) : p.bsz2;
  const bool empty = A.numel() == 0 || B.numel() == 0;

  Tensor out, Aq, Bq;
  const std::optional<Fp8GemmScales> tc_scales =
      mixed && !empty && p.product == Fp8Product::tensor_cores
          ? tensor_core_scales(A, B, p.b_transposed, fw_code, p.bsz)
          : std::nullopt;
  if (empty) {
    out = Tensor::zeros(out_shape, A.dtype(), A.device());
  } else if (tc_scales) {
    // E4M3 codes of A (scales: its block absmax) and B (max |B| / 240^2); Bq (simulated) only
    // for a grad_A.
    Tensor A8, a_scale, B8, b_scale;
    const bool want_bq = A.requires_grad() && autograd::needs_grad({A, B});
    quant_internal::e4m3_operands(A.detach(), bsz, B.detach(), p.b_transposed, fw_code,
                                  *tc_scales == Fp8GemmScales::block128, A8, a_scale, B8, b_scale,
                                  want_bq ? &Bq : nullptr);
    out = Tensor::empty(out_shape, A.dtype(), A.device());
    fp8_gemm_scaled_into(*tc_scales, A8, B8, a_scale, b_scale, out);
  } else {
    const int64_t a_bs = mixed ? bsz : 0;
    int b_hint_parts = 0;
    if (A.device().is_cuda() && mixed && detail::amax_hint(B, &b_hint_parts) == nullptr) {
      // One kernel for A's pass and max |B|, then B's pass; all on this stream.
      quant_internal::fake_quantize_pair(A.detach(), a_bs, B.detach(), fw_code, Aq, Bq);
    } else if (A.device().is_cuda()) {
      // A's pass on the side stream, B's (absmax pass, then the fused pass) on this one; the
      // GEMM waits for both. a_absmax lives until the join.
      Tensor a_absmax;
      Aq = quant_internal::fake_quantize_forked(A.detach(), fw_code, a_bs, a_absmax);
      Bq = fake_quantize(B.detach(), fw_code);
      join_side_stream(A.device());
    } else {
      Bq = fake_quantize(B.detach(), fw_code);
      Aq = fake(A.detach(), fw_code, a_bs);
    }
    out = Tensor::empty(out_shape, A.dtype(), A.device());
    gemm_into(Aq, Bq, out, rows, k, n, false, p.b_transposed);
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
    auto grad_b = [&](const Tensor& h) {
      const Tensor& x = saved_a.get();
      gb = Tensor::empty(b_shape, dtype, device);
      if (bt) gemm_into(h, x, gb, n, rows, k, true, false);  // (N, K) = H^T X
      else gemm_into(x, h, gb, k, rows, n, true, false);     // (K, N) = X^T H
    };
    const int64_t g_bs = mixed ? bsz2 : 0;
    Tensor gq;
    if (mixed && need_b && need_a && g.device().is_cuda()) {
      // grad_B = A^T G needs no quantized G: its GEMM runs while G is fake-quantized beside it.
      Tensor g_absmax;
      gq = quant_internal::fake_quantize_forked(g, bw_code, g_bs, g_absmax);
      grad_b(g);
      join_side_stream(device);
    } else {
      gq = fake(g, bw_code, g_bs);
      if (need_b) grad_b(mixed ? g : gq);
    }
    if (need_a) {  // (rows, N) x Bq^T
      ga = Tensor::empty(a_shape, dtype, device);
      gemm_into(gq, saved_bq.get(), ga, rows, n, k, false, !bt);
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
                        int64_t bsz2, Fp8Product product) {
  detail::Fp8Args p{
      .op = "matmul_fp8_mixed", .variant = detail::Fp8Variant::mixed, .bsz = bsz, .bsz2 = bsz2, .product = product};
  return detail::fp8_matmul(p, A, B, fw_code, bw_code);
}

bool fp8_tensor_core_forward(const Tensor& A, const Tensor& B, const Code& fw_code, int64_t bsz) {
  return detail::fp8_tensor_core_forward(A, B, false, fw_code, bsz);
}

Tensor matmul_fp8_global(const Tensor& A, const Tensor& B, const Code& fw_code, const Code& bw_code) {
  detail::Fp8Args p{.op = "matmul_fp8_global", .variant = detail::Fp8Variant::global};
  return detail::fp8_matmul(p, A, B, fw_code, bw_code);
}

}  // namespace octet
