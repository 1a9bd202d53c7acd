// CUDA launchers of the fp8_gemm family (same arguments as src/cpu/fp8_gemm.hpp, but scales are
// device pointers, plus the stream). Launchers assume validated arguments (src/fp8_gemm_cast.cpp,
// src/fp8_gemm.cpp) and check their launches. The cuBLASLt GEMM itself is driven from
// src/fp8_gemm_plan.cpp.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "octet/dtype.hpp"

namespace octet::kernels {

// q = sat_rne(x * scale[0]) for x (rows, cols); q_t (cols, rows) when not null; amax (when not
// null) is overwritten with max |x| (zeroed first, then an order-free bit max). q null: amax only.
// colsum (when not null; x's dtype, (cols)) = column sums of x in f32, rounded once, through
// colsum_partial: f32 scratch of (fp8_colsum_tiles(rows), cols).
void fp8_cast(DType in_t, const void* x, DType fp8, const float* scale, void* q, void* q_t, int64_t rows,
              int64_t cols, float* amax, float* colsum_partial, void* colsum, cudaStream_t s);
int64_t fp8_colsum_tiles(int64_t rows);
// *amax = the max over `count` per-block maxima of an amax hint (ordered bits, kernels/ops.cuh).
void fp8_amax_partials(const uint32_t* partials, int count, float* amax, cudaStream_t s);
void fp8_dequantize(DType fp8, const void* q, const float* scale_inv, DType out_t, void* out, int64_t n,
                    cudaStream_t s);
void fp8_current_scale(const float* amax, float fp8_max, int margin, float* scale, float* scale_inv, cudaStream_t s);
void fp8_delayed_scale(float* history, int64_t len, bool use_max, const float* previous, float fp8_max, int margin,
                       float* scale, float* scale_inv, cudaStream_t s);
// dst (dst_rows, dst_cols) = src (src_rows, src_cols) where both exist, 0 elsewhere (pad or crop).
void copy2d(const void* src, int64_t src_rows, int64_t src_cols, void* dst, int64_t dst_rows, int64_t dst_cols,
            size_t elem_size, cudaStream_t s);

}  // namespace octet::kernels
