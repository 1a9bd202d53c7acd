// Casts and scaling recipes of the fp8_gemm family (fp8_gemm.hpp): validation, then the CPU
// reference (src/cpu/fp8_gemm.cpp) or the CUDA kernels (kernels/fp8_gemm.cu) on the current stream.
// Scales and amax stay device scalars: nothing here waits for the device.
#include "kernels/fp8_gemm.cuh"
#include "octet/autograd.hpp"
#include "octet/convert.hpp"
#include "src/amax_hint.hpp"
#include "src/cpu/fp8_gemm.hpp"
#include "src/fp8_gemm_internal.hpp"
#include "src/runtime_internal.hpp"

namespace octet {

using namespace fp8_gemm_internal;

namespace {

Fp8Scale new_scale(Device device) {
  return {Tensor::empty({}, DType::f32, device), Tensor::empty({}, DType::f32, device)};
}

}  // namespace

float fp8_max(DType fp8) {
  check_fp8_dtype("fp8_max", "fp8", fp8);
  return fp8 == DType::f8_e4m3 ? kE4M3Max : kE5M2Max;
}

Fp8Cast cast_to_fp8(const Tensor& x, DType fp8, const Tensor& scale, const Tensor& amax, bool transpose,
                    bool column_sums) {
  const char* op = "cast_to_fp8";
  check::dtype_in(op, "x", x, kHigh);
  check_fp8_dtype(op, "fp8", fp8);
  check_scalar(op, "scale", scale, x.device());
  if (amax.defined()) {
    check::dtype_is(op, "amax", amax, DType::f32);
    check::device_is(op, "amax", amax, x.device());
    if (amax.numel() < 1) fail_arg(op, "amax", "an f32 tensor with at least one element", "an empty tensor");
  }
  if (transpose || column_sums) check::dim_in(op, "x", x, 1, 64);
  autograd::refuse(op, {x});
  const int64_t cols = x.dim() == 0 ? 1 : x.size(-1), rows = rows_of(x);
  Fp8Cast r;
  r.data = Tensor::empty(x.shape(), fp8, x.device());
  if (transpose) r.transposed = Tensor::empty({cols, rows}, fp8, x.device());
  if (column_sums) r.column_sums = Tensor::empty({cols}, x.dtype(), x.device());
  void* qt = transpose ? r.transposed.data() : nullptr;
  void* sums = column_sums ? r.column_sums.data() : nullptr;
  float* amax_p = amax.defined() ? static_cast<float*>(amax.data()) : nullptr;
  if (x.device().is_cpu()) {
    cpu::fp8_cast(x.dtype(), x.data(), fp8, host_scalar(scale), r.data.data(), qt, rows, cols, amax_p, sums);
  } else {
    detail::DeviceGuard g(x.device());
    Tensor partial = column_sums ? Tensor::empty({kernels::fp8_colsum_tiles(rows), cols}, DType::f32, x.device())
                                 : Tensor();
    kernels::fp8_cast(x.dtype(), x.data(), fp8, static_cast<const float*>(scale.data()), r.data.data(), qt, rows,
                      cols, amax_p, column_sums ? static_cast<float*>(partial.data()) : nullptr, sums,
                      detail::stream(x.device()));
  }
  return r;
}

Tensor fp8_amax(const Tensor& x) {
  const char* op = "fp8_amax";
  check::dtype_in(op, "x", x, kHigh);
  autograd::refuse(op, {x});
  Tensor amax = Tensor::empty({}, DType::f32, x.device());
  auto* amax_p = static_cast<float*>(amax.data());
  if (x.device().is_cpu()) {
    cpu::fp8_cast(x.dtype(), x.data(), DType::f8_e4m3, 1.0f, nullptr, nullptr, 1, x.numel(), amax_p);
  } else {
    detail::DeviceGuard g(x.device());
    int blocks = 0;
    if (const uint32_t* partials = detail::amax_hint(x, &blocks))  // x's producer kept its amax
      kernels::fp8_amax_partials(partials, blocks, amax_p, detail::stream(x.device()));
    else
      kernels::fp8_cast(x.dtype(), x.data(), DType::f8_e4m3, nullptr, nullptr, nullptr, 1, x.numel(), amax_p, nullptr,
                        nullptr, detail::stream(x.device()));
  }
  return amax;
}

Tensor dequantize_fp8(const Tensor& q, const Tensor& scale_inv, DType out) {
  const char* op = "dequantize_fp8";
  check::dtype_in(op, "q", q, kFp8);
  check_scalar(op, "scale_inv", scale_inv, q.device());
  if (out != DType::f32 && out != DType::f16 && out != DType::bf16)
    fail_arg(op, "out", check::dtypes_str(kHigh), dtype_name(out));
  Tensor r = Tensor::empty(q.shape(), out, q.device());
  if (q.device().is_cpu()) {
    cpu::fp8_dequantize(q.dtype(), q.data(), host_scalar(scale_inv), out, r.data(), q.numel());
  } else {
    detail::DeviceGuard g(q.device());
    kernels::fp8_dequantize(q.dtype(), q.data(), static_cast<const float*>(scale_inv.data()), out, r.data(),
                            q.numel(), detail::stream(q.device()));
  }
  return r;
}

Fp8Scale fp8_current_scale(const Tensor& amax, DType fp8, int margin) {
  const char* op = "fp8_current_scale";
  check::defined(op, "amax", amax);
  check_scalar(op, "amax", amax, amax.device());
  check_fp8_dtype(op, "fp8", fp8);
  const float fmax = fp8_max(fp8);
  if (margin < 0 || margin > 64) fail_arg(op, "margin", "0 to 64", cat(margin));
  Fp8Scale s = new_scale(amax.device());
  if (amax.device().is_cpu()) {
    cpu::fp8_current_scale(host_scalar(amax), fmax, margin, static_cast<float*>(s.scale.data()),
                           static_cast<float*>(s.scale_inv.data()));
  } else {
    detail::DeviceGuard g(amax.device());
    kernels::fp8_current_scale(static_cast<const float*>(amax.data()), fmax, margin,
                               static_cast<float*>(s.scale.data()),
                               static_cast<float*>(s.scale_inv.data()), detail::stream(amax.device()));
  }
  return s;
}

Fp8Scale fp8_delayed_scale(const Tensor& history, const Fp8Scale& previous, DType fp8, const DelayedScaling& recipe) {
  const char* op = "fp8_delayed_scale";
  check::defined(op, "history", history);
  check::dtype_is(op, "history", history, DType::f32);
  check::shape_is(op, "history", history, {recipe.history_len});
  if (recipe.history_len < 1) fail_arg(op, "recipe.history_len", "at least 1", cat(recipe.history_len));
  check_scalar(op, "previous.scale", previous.scale, history.device());
  check_fp8_dtype(op, "fp8", fp8);
  const float fmax = fp8_max(fp8);
  if (recipe.margin < 0 || recipe.margin > 64) fail_arg(op, "recipe.margin", "0 to 64", cat(recipe.margin));
  autograd::refuse(op, {history});
  const bool use_max = recipe.algo == AmaxAlgo::max;
  Fp8Scale s = new_scale(history.device());
  auto* h = static_cast<float*>(history.data());
  if (history.device().is_cpu()) {
    cpu::fp8_delayed_scale(h, recipe.history_len, use_max, host_scalar(previous.scale), fmax, recipe.margin,
                           static_cast<float*>(s.scale.data()), static_cast<float*>(s.scale_inv.data()));
  } else {
    detail::DeviceGuard g(history.device());
    kernels::fp8_delayed_scale(h, recipe.history_len, use_max, static_cast<const float*>(previous.scale.data()), fmax,
                               recipe.margin, static_cast<float*>(s.scale.data()),
                               static_cast<float*>(s.scale_inv.data()), detail::stream(history.device()));
  }
  return s;
}

Fp8Scale fp8_unit_scale(Device device) {
  return {Tensor::ones({}, DType::f32, device), Tensor::ones({}, DType::f32, device)};
}

}  // namespace octet
