// CPU reference kernels of the core ops (contiguous row-major buffers, sizes in elements).
// 16-bit floats compute in f32 and round once; reductions accumulate in f64.
#pragma once
#include <cstddef>
#include <cstdint>

#include "octet/dtype.hpp"
#include "src/op_kinds.hpp"

namespace octet::cpu {

void fill(DType t, void* out, int64_t n, double value);
void convert(const void* in, DType in_t, void* out, DType out_t, int64_t n);
void transpose2d(const void* in, void* out, int64_t rows, int64_t cols, size_t elem_size);
void binary(Binary op, DType t, const void* a, const void* b, void* out, int64_t n);
void unary(Unary op, DType t, const void* x, double alpha, void* out, int64_t n);
// Writes one element: sum/mean in t, max_abs in f32 (NaN if any NaN, 0 if n == 0).
void reduce(Reduce op, DType t, const void* x, int64_t n, void* out);
void add_bias(DType t, const void* x, const void* bias, void* out, int64_t rows, int64_t cols);
void sum_rows(DType t, const void* x, void* out, int64_t rows, int64_t cols);
// out(M,N) = a(M,K) b(K,N), f32 accumulation (f64 for f64), K = 0 gives zeros.
void matmul(DType t, const void* a, const void* b, void* out, int64_t m, int64_t k, int64_t n);
// y[i] = fma(alpha, x[i], y[i]) in f32 (f64 for f64), rounded once to t.
void axpy(DType t, double alpha, const void* x, void* y, int64_t n);

}  // namespace octet::cpu
