// Dispatch and validation of the core ops (ops.hpp): one place per op that checks arguments,
// allocates the output, runs the CPU or CUDA kernel and records the backward on the tape.
#include "octet/ops.hpp"

#include <cmath>

#include "octet/autograd.hpp"
#include "kernels/ops.cuh"
#include "src/amax_hint.hpp"
#include "src/check.hpp"
#include "src/cpu/ops.hpp"
#include "src/cuda_check.hpp"
#include "src/gemm.hpp"
#include "src/runtime_internal.hpp"

namespace octet {
namespace {

constexpr std::initializer_list<DType> kFloat = {DType::f32, DType::f64, DType::f16, DType::bf16};

void check_pair(const char* op, const Tensor& a, const Tensor& b, const char* a_name = "a", const char* b_name = "b") {
  check::dtype_in(op, a_name, a, kFloat);
  check::dtype_is(op, b_name, b, a.dtype());
  check::device_is(op, b_name, b, a.device());
  check::shape_is(op, b_name, b, a.shape());
}

Tensor binary_op(const char* op, Binary kind, const Tensor& a, const Tensor& b) {
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  if (a.device().is_cpu()) {
    cpu::binary(kind, a.dtype(), a.data(), b.data(), out.data(), a.numel());
  } else {
    detail::DeviceGuard g(a.device());
    auto hint = detail::amax_hint_buffer(out, kernels::kAmaxPartials);
    detail::set_amax_hint(out, hint, kernels::binary(kind, a.dtype(), a.data(), b.data(), out.data(), a.numel(),
                                                     detail::hint_data(hint), detail::stream(a.device())));
  }
  (void)op;
  return out;
}

Tensor unary_op(Unary kind, const Tensor& x, double alpha) {
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (x.device().is_cpu()) {
    cpu::unary(kind, x.dtype(), x.data(), alpha, out.data(), x.numel());
  } else {
    detail::DeviceGuard g(x.device());
    auto hint = detail::amax_hint_buffer(out, kernels::kAmaxPartials);
    detail::set_amax_hint(out, hint, kernels::unary(kind, x.dtype(), x.data(), alpha, out.data(), x.numel(),
                                                    detail::hint_data(hint), detail::stream(x.device())));
  }
  return out;
}

Tensor reduce_op(Reduce kind, const Tensor& x) {
  Tensor out = Tensor::empty({}, kind == Reduce::max_abs ? DType::f32 : x.dtype(), x.device());
  if (x.device().is_cpu()) {
    cpu::reduce(kind, x.dtype(), x.data(), x.numel(), out.data());
  } else {
    detail::DeviceGuard g(x.device());
    kernels::reduce(kind, x.dtype(), x.data(), x.numel(), out.data(), detail::stream(x.device()));
  }
  return out;
}

// A tensor of `shape` filled with factor * s, s a 0-dim tensor (the gradient of sum/mean).
Tensor broadcast_scalar(const Tensor& s, const Shape& shape, double factor) {
  const int64_t n = shape_numel(shape);
  Tensor zeros = Tensor::zeros({n, 1}, s.dtype(), s.device());
  Tensor expanded = Tensor::empty({n, 1}, s.dtype(), s.device());
  if (s.device().is_cpu()) {
    cpu::add_bias(s.dtype(), zeros.data(), s.data(), expanded.data(), n, 1);
  } else {
    detail::DeviceGuard g(s.device());
    kernels::add_bias(s.dtype(), zeros.data(), s.data(), expanded.data(), n, 1, detail::stream(s.device()));
  }
  if (factor != 1.0) expanded = unary_op(Unary::scale, expanded, factor);
  return expanded.reshape(shape);
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  check_pair("add", a, b);
  Tensor out = binary_op("add", Binary::add, a, b);
  if (autograd::needs_grad({a, b}))
    autograd::record("add", {a, b}, out, [](const Tensor& g) { return std::vector<Tensor>{g, g}; });
  return out;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  check_pair("sub", a, b);
  Tensor out = binary_op("sub", Binary::sub, a, b);
  if (autograd::needs_grad({a, b}))
    autograd::record("sub", {a, b}, out, [](const Tensor& g) { return std::vector<Tensor>{g, scale(g, -1.0)}; });
  return out;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  check_pair("mul", a, b);
  Tensor out = binary_op("mul", Binary::mul, a, b);
  if (autograd::needs_grad({a, b})) {
    const bool need_a = a.requires_grad(), need_b = b.requires_grad();
    autograd::SavedTensor as(need_b ? a : Tensor(), "mul"), bs(need_a ? b : Tensor(), "mul");
    autograd::record("mul", {a, b}, out, [as, bs, need_a, need_b](const Tensor& g) {
      return std::vector<Tensor>{need_a ? mul(g, bs.get()) : Tensor(), need_b ? mul(g, as.get()) : Tensor()};
    });
  }
  return out;
}

Tensor scale(const Tensor& x, double s) {
  check::dtype_in("scale", "x", x, kFloat);
  Tensor out = unary_op(Unary::scale, x, s);
  if (autograd::needs_grad({x}))
    autograd::record("scale", {x}, out, [s](const Tensor& g) { return std::vector<Tensor>{scale(g, s)}; });
  return out;
}

Tensor abs(const Tensor& x) {
  check::dtype_in("abs", "x", x, kFloat);
  Tensor out = unary_op(Unary::abs, x, 0.0);
  if (autograd::needs_grad({x})) {
    Tensor sign = unary_op(Unary::sign, x.detach(), 0.0);
    autograd::record("abs", {x}, out, [sign](const Tensor& g) { return std::vector<Tensor>{mul(g, sign)}; });
  }
  return out;
}

Tensor sum(const Tensor& x) {
  check::dtype_in("sum", "x", x, kFloat);
  Tensor out = reduce_op(Reduce::sum, x);
  if (autograd::needs_grad({x})) {
    const Shape shape = x.shape();
    autograd::record("sum", {x}, out, [shape](const Tensor& g) { return std::vector<Tensor>{broadcast_scalar(g, shape, 1.0)}; });
  }
  return out;
}

Tensor mean(const Tensor& x) {
  check::dtype_in("mean", "x", x, kFloat);
  Tensor out = reduce_op(Reduce::mean, x);
  if (autograd::needs_grad({x})) {
    const Shape shape = x.shape();
    const double inv = x.numel() > 0 ? 1.0 / static_cast<double>(x.numel()) : 0.0;
    autograd::record("mean", {x}, out, [shape, inv](const Tensor& g) { return std::vector<Tensor>{broadcast_scalar(g, shape, inv)}; });
  }
  return out;
}

Tensor max_abs(const Tensor& x) {
  check::dtype_in("max_abs", "x", x, kFloat);
  autograd::refuse("max_abs", {x});
  return reduce_op(Reduce::max_abs, x);
}

namespace detail {

// (src/gemm.hpp) The CPU materializes the transposes; cuBLAS takes them as op flags.
void gemm_into(const Tensor& a, const Tensor& b, Tensor& out, int64_t m, int64_t k, int64_t n, bool ta, bool tb) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    out.fill_(0.0);
    return;
  }
  if (a.device().is_cpu()) {
    const Tensor ac = ta ? a.detach().reshape({k, m}).t() : a, bc = tb ? b.detach().reshape({n, k}).t() : b;
    cpu::matmul(a.dtype(), ac.data(), bc.data(), out.data(), m, k, n);
    return;
  }
  OCTET_CHECK(m <= INT32_MAX && k <= INT32_MAX && n <= INT32_MAX, "matmul",
              "each of M, K, N must be below 2^31 for cuBLAS, got ", m, ", ", k, ", ", n);
  detail::DeviceGuard g(a.device());
  cublasHandle_t h = detail::cublas_handle(a.device());
  cudaDataType_t t;
  cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  switch (a.dtype()) {
    case DType::f32: t = CUDA_R_32F; break;
    case DType::f64: t = CUDA_R_64F; compute = CUBLAS_COMPUTE_64F; break;
    case DType::f16: t = CUDA_R_16F; break;
    default: t = CUDA_R_16BF; break;
  }
  const float one_f = 1.0f, zero_f = 0.0f;
  const double one_d = 1.0, zero_d = 0.0;
  const void* alpha = compute == CUBLAS_COMPUTE_64F ? static_cast<const void*>(&one_d) : &one_f;
  const void* beta = compute == CUBLAS_COMPUTE_64F ? static_cast<const void*>(&zero_d) : &zero_f;
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T; a row-major buffer read
  // column-major is its transpose, so a stored transposed operand takes CUBLAS_OP_T.
  const int ldb = static_cast<int>(tb ? k : n), lda = static_cast<int>(ta ? m : k);
  detail::sanitizer_preset(out.data(), static_cast<size_t>(m * n) * dtype_size(out.dtype()), a.device());
  OCTET_CUBLAS_CHECK(cublasGemmEx(h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, static_cast<int>(n),
                                  static_cast<int>(m), static_cast<int>(k), alpha, b.data(), t, ldb, a.data(), t, lda,
                                  beta, out.data(), t, static_cast<int>(n), compute, CUBLAS_GEMM_DEFAULT));
}

}  // namespace detail

using detail::gemm_into;

Tensor matmul(const Tensor& a, const Tensor& b) {
  check::dtype_in("matmul", "a", a, kFloat);
  check::dim_in("matmul", "a", a, 2, 3);
  check::dtype_is("matmul", "b", b, a.dtype());
  check::device_is("matmul", "b", b, a.device());
  check::dim_in("matmul", "b", b, 2, 2);
  const int64_t k = a.size(-1);
  if (b.size(0) != k)
    fail_arg("matmul", "b", cat("shape (", k, ", N) to match a ", shape_str(a.shape())), cat("shape ", shape_str(b.shape())));
  const int64_t n = b.size(1);
  Shape out_shape(a.shape().begin(), a.shape().end() - 1);
  const int64_t rows = shape_numel(out_shape);
  out_shape.push_back(n);
  Tensor out = Tensor::empty(out_shape, a.dtype(), a.device());
  gemm_into(a, b, out, rows, k, n);
  if (autograd::needs_grad({a, b})) {
    const bool need_a = a.requires_grad(), need_b = b.requires_grad();
    const Shape a_shape = a.shape();
    autograd::SavedTensor as(need_b ? a : Tensor(), "matmul"), bs(need_a ? b : Tensor(), "matmul");
    autograd::record("matmul", {a, b}, out, [as, bs, a_shape, rows, k, n, need_a, need_b](const Tensor& g) {
      Tensor ga, gb;
      if (need_a) {  // (rows,N) (K,N)^T
        ga = Tensor::empty(a_shape, g.dtype(), g.device());
        gemm_into(g, bs.get(), ga, rows, n, k, false, true);
      }
      if (need_b) {  // (rows,K)^T (rows,N): sums over the batch
        gb = Tensor::empty({k, n}, g.dtype(), g.device());
        gemm_into(as.get(), g, gb, k, rows, n, true, false);
      }
      return std::vector<Tensor>{ga, gb};
    });
  }
  return out;
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check::dtype_in("linear", "x", x, kFloat);
  check::dim_in("linear", "x", x, 2, 3);
  check::dtype_is("linear", "weight", weight, x.dtype());
  check::device_is("linear", "weight", weight, x.device());
  check::dim_in("linear", "weight", weight, 2, 2);
  const int64_t k = x.size(-1), n = weight.size(0);
  if (weight.size(1) != k)
    fail_arg("linear", "weight", cat("shape (N, ", k, ") to match x ", shape_str(x.shape())),
             cat("shape ", shape_str(weight.shape())));
  if (bias.defined()) {
    check::dtype_is("linear", "bias", bias, x.dtype());
    check::device_is("linear", "bias", bias, x.device());
    check::shape_is("linear", "bias", bias, {n});
  }
  Shape out_shape(x.shape().begin(), x.shape().end() - 1);
  const int64_t rows = shape_numel(out_shape);
  out_shape.push_back(n);
  Tensor y = Tensor::empty(out_shape, x.dtype(), x.device());
  gemm_into(x, weight, y, rows, k, n, false, true);  // weight is stored (N, K): op flag, no copy
  if (autograd::needs_grad({x, weight})) {
    const bool need_x = x.requires_grad(), need_w = weight.requires_grad();
    const Shape x_shape = x.shape();
    autograd::SavedTensor xs(need_w ? x : Tensor(), "linear"), ws(need_x ? weight : Tensor(), "linear");
    autograd::record("linear", {x, weight}, y, [xs, ws, x_shape, rows, k, n, need_x, need_w](const Tensor& g) {
      Tensor gx, gw;
      if (need_x) {  // (rows,N) (N,K)
        gx = Tensor::empty(x_shape, g.dtype(), g.device());
        gemm_into(g, ws.get(), gx, rows, n, k);
      }
      if (need_w) {  // (rows,N)^T (rows,K): sums over the batch
        gw = Tensor::empty({n, k}, g.dtype(), g.device());
        gemm_into(g, xs.get(), gw, n, rows, k, true, false);
      }
      return std::vector<Tensor>{gx, gw};
    });
  }
  return bias.defined() ? add_bias(y, bias) : y;
}

Tensor add_bias(const Tensor& x, const Tensor& bias) {
  check::dtype_in("add_bias", "x", x, kFloat);
  check::dim_in("add_bias", "x", x, 1, 8);
  check::dtype_is("add_bias", "bias", bias, x.dtype());
  check::device_is("add_bias", "bias", bias, x.device());
  check::shape_is("add_bias", "bias", bias, {x.size(-1)});
  const int64_t cols = x.size(-1), rows = cols == 0 ? 0 : x.numel() / cols;
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (x.device().is_cpu()) {
    cpu::add_bias(x.dtype(), x.data(), bias.data(), out.data(), rows, cols);
  } else {
    detail::DeviceGuard g(x.device());
    kernels::add_bias(x.dtype(), x.data(), bias.data(), out.data(), rows, cols, detail::stream(x.device()));
  }
  if (autograd::needs_grad({x, bias}))
    autograd::record("add_bias", {x, bias}, out, [](const Tensor& g) { return std::vector<Tensor>{g, sum_rows(g)}; });
  return out;
}

Tensor sum_rows(const Tensor& x) {
  check::dtype_in("sum_rows", "x", x, kFloat);
  check::dim_in("sum_rows", "x", x, 1, 8);
  const int64_t cols = x.size(-1), rows = cols == 0 ? 0 : x.numel() / cols;
  Tensor out = Tensor::empty({cols}, x.dtype(), x.device());
  if (x.device().is_cpu()) {
    cpu::sum_rows(x.dtype(), x.data(), out.data(), rows, cols);
  } else {
    detail::DeviceGuard g(x.device());
    kernels::sum_rows(x.dtype(), x.data(), out.data(), rows, cols, detail::stream(x.device()));
  }
  if (autograd::needs_grad({x})) {
    const Shape shape = x.shape();
    autograd::record("sum_rows", {x}, out, [shape, rows, cols](const Tensor& g) {
      Tensor expanded = add_bias(Tensor::zeros({rows, cols}, g.dtype(), g.device()), g);
      return std::vector<Tensor>{expanded.reshape(shape)};
    });
  }
  return out;
}

Tensor gelu(const Tensor& x) {
  check::dtype_in("gelu", "x", x, kFloat);
  Tensor out = unary_op(Unary::gelu, x, 0.0);
  if (autograd::needs_grad({x})) {
    autograd::SavedTensor xs(x, "gelu");
    autograd::record("gelu", {x}, out, [xs](const Tensor& g) {
      return std::vector<Tensor>{binary_op("gelu_backward", Binary::gelu_backward, xs.get(), g)};
    });
  }
  return out;
}

void axpy_(const Tensor& y, double alpha, const Tensor& x) {
  check::dtype_in("axpy_", "y", y, kFloat);
  check::dtype_is("axpy_", "x", x, y.dtype());
  check::device_is("axpy_", "x", x, y.device());
  check::shape_is("axpy_", "x", x, y.shape());
  // x may be y itself (each element reads only itself) or memory apart from it; a view that
  // overlaps y in part would read elements already written (in order on the CPU, racing on CUDA).
  const auto x_first = reinterpret_cast<uintptr_t>(x.data()), y_first = reinterpret_cast<uintptr_t>(y.data());
  if (y.numel() > 0 && x_first != y_first && x_first < y_first + y.nbytes() && y_first < x_first + x.nbytes())
    fail_arg("axpy_", "x", "y itself or memory apart from y",
             cat(x.str(), " overlapping y in part (views of one buffer)"));
  autograd::refuse("axpy_", {x});
  autograd::mark_inplace("axpy_", "y", y);
  if (y.device().is_cpu()) {
    cpu::axpy(y.dtype(), alpha, x.data(), y.data(), y.numel());
  } else {
    detail::DeviceGuard g(y.device());
    auto hint = detail::amax_hint_buffer(y, kernels::kAmaxPartials);
    const int blocks = kernels::axpy(y.dtype(), alpha, x.data(), y.data(), y.numel(), detail::hint_data(hint),
                                     detail::stream(y.device()));
    if (hint) detail::set_amax_hint(y, hint, blocks);  // y's version was bumped above
  }
}

Tensor mse_loss(const Tensor& pred, const Tensor& target) {
  check_pair("mse_loss", pred, target, "pred", "target");
  Tensor diff = sub(pred, target);
  return mean(mul(diff, diff));
}

}  // namespace octet
