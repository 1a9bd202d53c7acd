// CUDA launchers of the core ops (same names and arguments as src/cpu/ops.hpp, plus the stream).
// Launchers assume validated arguments (src/ops.cpp validates) and check their launches.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "octet/dtype.hpp"
#include "src/op_kinds.hpp"

namespace octet::kernels {

void fill(DType t, void* out, int64_t n, double value, cudaStream_t s);
void convert(const void* in, DType in_t, void* out, DType out_t, int64_t n, cudaStream_t s);
void transpose2d(const void* in, void* out, int64_t rows, int64_t cols, size_t elem_size, cudaStream_t s);
// The elementwise launchers (binary, unary, axpy) take amax_partials: null, or kAmaxPartials
// entries where block i of the launch writes the max of |out| over its elements as the ordered
// bits of amax_bits (src/cpu/fp8_gemm.hpp); they return how many blocks wrote one (0 for null
// or f64). This is the amax hint that fp8_amax reads instead of a pass over out (src/amax_hint.hpp).
constexpr int kAmaxPartials = 8192;  // the elementwise grid limit: hints do not change the grid
int binary(Binary op, DType t, const void* a, const void* b, void* out, int64_t n, uint32_t* amax_partials,
           cudaStream_t s);
int unary(Unary op, DType t, const void* x, double alpha, void* out, int64_t n, uint32_t* amax_partials,
          cudaStream_t s);
// Deterministic two-pass reduction; `out` is one element (t for sum/mean, f32 for max_abs).
void reduce(Reduce op, DType t, const void* x, int64_t n, void* out, cudaStream_t s);
void add_bias(DType t, const void* x, const void* bias, void* out, int64_t rows, int64_t cols, cudaStream_t s);
void sum_rows(DType t, const void* x, void* out, int64_t rows, int64_t cols, cudaStream_t s);
// y += alpha x, one rounding (fma in f32, f64 for f64).
int axpy(DType t, double alpha, const void* x, void* y, int64_t n, uint32_t* amax_partials, cudaStream_t s);

}  // namespace octet::kernels
