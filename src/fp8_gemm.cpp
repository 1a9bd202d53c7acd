// The GEMM of the fp8_gemm family (fp8_gemm.hpp matmul_fp8, matmul_fp8_path, and the
// block-scaled GEMM of the simulated family's tensor-core forward, detail::fp8_gemm_scaled_into):
// validation, then the route: CPU emulation (src/cpu/fp8_gemm.cpp); cuBLASLt on FP8 tensor cores
// (src/fp8_gemm_plan.cpp; dims not multiples of 16 or 16-byte aligned go through zero-padded
// copies); or, where cuBLASLt has no algorithm (E5M2 x E5M2, GPUs without FP8 tensor cores), the
// dequantize + f32 GEMM fallback. f32 outputs get their bias from add_bias afterwards (cuBLASLt's
// FP8 BIAS epilogue takes only f16/bf16 D).
#include "kernels/fp8_gemm.cuh"
#include "octet/autograd.hpp"
#include "octet/ops.hpp"
#include "src/cpu/fp8_gemm.hpp"
#include "src/fp8_gemm_internal.hpp"
#include "src/fp8_simulated_internal.hpp"
#include "src/runtime_internal.hpp"

namespace octet {

using namespace fp8_gemm_internal;

namespace {

int64_t round16(int64_t v) { return (v + 15) / 16 * 16; }

struct Problem {
  int64_t m, n, k;
  bool epilogue_bias;  // bias goes through cuBLASLt (f16/bf16 out)
  Fp8GemmPath path;
  Plan* plan = nullptr;
};

Problem route(const Tensor& a, const Tensor& b, DType out_dtype, const Tensor& bias, bool fast_accum) {
  Problem p{};
  p.k = a.size(-1);
  p.n = b.size(0);
  p.m = rows_of(a);
  p.epilogue_bias = bias.defined() && out_dtype != DType::f32;
  const Device dev = a.device();
  if (dev.is_cpu()) {
    p.path = Fp8GemmPath::cpu_emulation;
    return p;
  }
  p.path = Fp8GemmPath::dequantize_fallback;
  const bool both_e5m2 = a.dtype() == DType::f8_e5m2 && b.dtype() == DType::f8_e5m2;
  if (p.k == 0 || p.m == 0 || p.n == 0 || both_e5m2 || !fp8_tensor_cores(dev.index)) return p;
  const uint32_t align_a = alignment(a.data()), align_b = alignment(b.data());
  const bool direct = p.m % 16 == 0 && p.n % 16 == 0 && p.k % 16 == 0 && align_a >= 16 && align_b >= 16 &&
                      (!p.epilogue_bias || alignment(bias.data()) >= 16);
  const bool tune = autotune_on() && p.m * p.n * p.k >= kTuneMinMacs;
  PlanKey key{dev.index, p.m, p.n, p.k, a.dtype(), b.dtype(), out_dtype, p.epilogue_bias, fast_accum, tune, 256, 256};
  if (direct) {
    key.align_a = align_a;
    key.align_b = align_b;
  } else {
    key.m = round16(p.m);
    key.n = round16(p.n);
    key.k = round16(p.k);
  }
  Plan& plan = plan_for(key);
  if (!plan.ok) return p;
  p.plan = &plan;
  p.path = direct ? Fp8GemmPath::cublaslt : Fp8GemmPath::cublaslt_padded;
  return p;
}

// A copy of t (rows, cols) zero-padded to (rows_p, cols_p) (or cropped), on t's device.
Tensor padded(const Tensor& t, int64_t rows, int64_t cols, int64_t rows_p, int64_t cols_p) {
  Tensor out = Tensor::empty({rows_p, cols_p}, t.dtype(), t.device());
  kernels::copy2d(t.data(), rows, cols, out.data(), rows_p, cols_p, dtype_size(t.dtype()), detail::stream(t.device()));
  return out;
}

// Dequantize both operands and run the f32 GEMM of ops.hpp (TF32 off).
Tensor fallback(const Tensor& a2, const Tensor& b, const Tensor& scale_a, const Tensor& scale_b, DType out_dtype,
                const Tensor& bias) {
  Tensor out = matmul(dequantize_fp8(a2, scale_a), dequantize_fp8(b, scale_b).t());
  if (bias.defined()) out = add_bias(out, bias.to(DType::f32));
  return out.to(out_dtype);
}

void check_gemm(const char* op, const Tensor& a, const Tensor& b, DType out_dtype, const Tensor& bias) {
  check::defined(op, "a", a);
  check::dtype_in(op, "a", a, kFp8);
  check::dim_in(op, "a", a, 2, 8);
  check::defined(op, "b", b);
  check::dtype_in(op, "b", b, kFp8);
  check::device_is(op, "b", b, a.device());
  check::dim_in(op, "b", b, 2, 2);
  if (b.size(1) != a.size(-1))
    fail_arg(op, "b", cat("shape (N, ", a.size(-1), ") to match a ", shape_str(a.shape()), " (b is used transposed)"),
             cat("shape ", shape_str(b.shape())));
  if (out_dtype != DType::f32 && out_dtype != DType::f16 && out_dtype != DType::bf16)
    fail_arg(op, "out_dtype", check::dtypes_str(kHigh), dtype_name(out_dtype));
  if (bias.defined()) {
    check::dtype_is(op, "bias", bias, out_dtype);
    check::device_is(op, "bias", bias, a.device());
    check::shape_is(op, "bias", bias, {b.size(0)});
  }
  autograd::refuse(op, {bias});
  if (a.device().is_cuda()) detail::require_device(op, a.device());
}

}  // namespace

Fp8GemmPath matmul_fp8_path(const Tensor& a, const Tensor& b, DType out_dtype, const Tensor& bias, bool fast_accum) {
  check_gemm("matmul_fp8_path", a, b, out_dtype, bias);
  detail::DeviceGuard g(a.device());
  return route(a, b, out_dtype, bias, fast_accum).path;
}

Tensor matmul_fp8(const Tensor& a, const Tensor& b, const Tensor& scale_a, const Tensor& scale_b, DType out_dtype,
                  const Tensor& bias, bool fast_accum) {
  const char* op = "matmul_fp8";
  check_gemm(op, a, b, out_dtype, bias);
  check_scalar(op, "scale_a", scale_a, a.device());
  check_scalar(op, "scale_b", scale_b, a.device());
  Shape out_shape(a.shape().begin(), a.shape().end() - 1);
  out_shape.push_back(b.size(0));
  const Device dev = a.device();
  detail::DeviceGuard g(dev);
  const Problem p = route(a, b, out_dtype, bias, fast_accum);
  if (p.path == Fp8GemmPath::cpu_emulation) {
    Tensor out = Tensor::empty(out_shape, out_dtype, dev);
    cpu::fp8_gemm(a.dtype(), a.data(), b.dtype(), b.data(), host_scalar(scale_a), host_scalar(scale_b),
                  bias.defined() ? bias.data() : nullptr, out_dtype, out.data(), p.m, p.n, p.k);
    return out;
  }
  NoGradGuard no_grad;
  if (p.m == 0 || p.n == 0) return Tensor::empty(out_shape, out_dtype, dev);
  if (p.path == Fp8GemmPath::dequantize_fallback)
    return fallback(a.reshape({p.m, p.k}), b, scale_a, scale_b, out_dtype, bias).reshape(out_shape);
  const void* bias_p = p.epilogue_bias ? bias.data() : nullptr;
  Tensor out;
  if (p.path == Fp8GemmPath::cublaslt) {
    out = Tensor::empty(out_shape, out_dtype, dev);
    run_plan(*p.plan, dev, a.data(), b.data(), scale_a, scale_b, bias_p, out);
  } else {
    const int64_t mp = round16(p.m), np = round16(p.n), kp = round16(p.k);
    Tensor ap = padded(a, p.m, p.k, mp, kp), bp = padded(b, p.n, p.k, np, kp);
    Tensor biasp = p.epilogue_bias ? padded(bias, 1, p.n, 1, np) : Tensor();
    Tensor outp = Tensor::empty({mp, np}, out_dtype, dev);
    run_plan(*p.plan, dev, ap.data(), bp.data(), scale_a, scale_b, p.epilogue_bias ? biasp.data() : nullptr, outp);
    out = padded(outp, mp, np, p.m, p.n).reshape(out_shape);
  }
  if (bias.defined() && !p.epilogue_bias) out = add_bias(out, bias);
  return out;
}

namespace detail {

bool fp8_gemm_scaled_available(Fp8GemmScales scales, Device device, int64_t m, int64_t n, int64_t k, DType a, DType b,
                               DType out) {
  if (!device.is_cuda() || compute_capability(device.index) != 90 || m <= 0 || n <= 0 || k <= 0 || m % 16 ||
      n % 16 || k % 16)
    return false;
  if (scales == Fp8GemmScales::block128 && (n % 128 || k % 128)) return false;
  DeviceGuard g(device);
  const PlanKey key{device.index, m, n, k, a, b, out, false, false, false, 16, 16, 1 + static_cast<int>(scales)};
  return plan_for(key).ok;
}

void fp8_gemm_scaled_into(Fp8GemmScales scales, const Tensor& a, const Tensor& b, const Tensor& a_scale,
                          const Tensor& b_scale, Tensor& out) {
  const char* op = "fp8_gemm_scaled_into";
  const Device dev = a.device();
  const int64_t m = a.size(0), k = a.size(1), n = b.size(0);
  for (const Tensor* t : {&a, &b, &a_scale, &b_scale, static_cast<const Tensor*>(&out)})
    if (alignment(t->data()) < 16) fail(op, "operands must be 16-byte aligned");
  const bool outer = scales == Fp8GemmScales::outer;
  if (a_scale.numel() != (outer ? m : k / 128 * m) || b_scale.numel() != (outer ? n : n / 128 * (k / 128)))
    fail(op, "scale tensors of the wrong size");
  if (!fp8_gemm_scaled_available(scales, dev, m, n, k, a.dtype(), b.dtype(), out.dtype()))
    fail(op, cat("no cuBLASLt algorithm for (", m, ", ", k, ") x (", n, ", ", k, ")"));
  DeviceGuard g(dev);
  const PlanKey key{dev.index, m, n, k, a.dtype(), b.dtype(), out.dtype(), false, false, false, 16, 16,
                    1 + static_cast<int>(scales)};
  run_plan(plan_for(key), dev, a.data(), b.data(), a_scale, b_scale, nullptr, out);
}

}  // namespace detail
}  // namespace octet
