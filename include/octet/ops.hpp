// Elementwise ops, reductions and matmul on both devices for f32, f64, f16 and bf16.
// 16-bit inputs compute in f32 and round once to the output dtype. Reductions accumulate in f32
// (f64 for f64) and are deterministic on both devices (fixed order, no atomics).
// Ops marked (d) are differentiable: they record on the autograd tape (autograd.hpp).
#pragma once
#include "octet/tensor.hpp"

namespace octet {

Tensor add(const Tensor& a, const Tensor& b);   // (d) same shape
Tensor sub(const Tensor& a, const Tensor& b);   // (d) same shape
Tensor mul(const Tensor& a, const Tensor& b);   // (d) same shape
Tensor scale(const Tensor& x, double s);        // (d) x * s
Tensor abs(const Tensor& x);                    // (d)
Tensor sum(const Tensor& x);                    // (d) 0-dim tensor of x's dtype
Tensor mean(const Tensor& x);                   // (d) 0-dim; mean of an empty tensor is NaN
Tensor max_abs(const Tensor& x);                // 0-dim f32: max |x|, NaN if any NaN, 0 if empty
// (d) (M,K)x(K,N) -> (M,N), and (b,M,K)x(K,N) -> (b,M,N). cuBLAS cublasGemmEx with f32
// accumulation on CUDA (TF32 off); blocked loops on the CPU. K = 0 gives zeros.
Tensor matmul(const Tensor& a, const Tensor& b);
// (d) y = x W^T (+ bias): x (M,K) or (b,M,K), weight (N,K) as a Linear layer stores it, bias (N)
// or undefined. The transposed weight is a cuBLAS op flag, never a copy.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = {});
Tensor add_bias(const Tensor& x, const Tensor& bias);        // (d) x[..., N] + bias[N]
Tensor gelu(const Tensor& x);                                // (d) exact erf form
Tensor mse_loss(const Tensor& pred, const Tensor& target);  // (d) mean((pred - target)^2)
Tensor sum_rows(const Tensor& x);  // (d) (..., N) -> (N): sum over all leading dims

// In place, not recorded: y += alpha * x with one rounding (fma in f32, in f64 for f64), the
// same bits on both devices. y must not require grad unless grad mode is off (autograd.hpp).
// x is y itself or memory apart from y: a view overlapping y in part is an error.
void axpy_(const Tensor& y, double alpha, const Tensor& x);

}  // namespace octet
