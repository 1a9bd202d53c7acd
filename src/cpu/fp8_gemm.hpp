// CPU reference of the fp8_gemm family (contiguous row-major buffers, sizes in elements), and the
// scale formulas shared with kernels/fp8_gemm.cu (compiled for both sides so that the two devices
// give the same bits).
#pragma once
#include <cfloat>
#include <cstdint>

#include "octet/dtype.hpp"

#if defined(__CUDACC__)
#define OCTET_HD __host__ __device__
#else
#define OCTET_HD
#endif

namespace octet {

// fp8_max / amax / 2^margin for a finite amax > 0 (FLT_MAX if that overflows, FLT_MIN if it
// underflows), otherwise `otherwise`. IEEE division on both devices.
OCTET_HD inline float fp8_scale_for(float amax, float fp8_max, int margin, float otherwise) {
  if (!(amax > 0.0f && amax <= FLT_MAX)) return otherwise;
  float s = fp8_max / amax;
  for (int i = 0; i < margin; ++i) s *= 0.5f;
  if (s > FLT_MAX) return FLT_MAX;
  if (s < FLT_MIN) return FLT_MIN;
  return s;
}

// |v| as ordered bits for an exact, order-free max: NaN maps to 0x7FC00000 (above +Inf).
OCTET_HD inline uint32_t amax_bits(uint32_t float_bits) {
  const uint32_t a = float_bits & 0x7FFFFFFFu;
  return a > 0x7F800000u ? 0x7FC00000u : a;
}

}  // namespace octet

namespace octet::cpu {

// q = sat_rne(x * scale) for x (rows, cols) of in_t; q_t (cols, rows) when not null; amax (when
// not null) = max |x| (see amax_bits). q null: amax only. colsum (when not null; in_t, (cols)):
// column sums of x accumulated in f64, rounded once.
void fp8_cast(DType in_t, const void* x, DType fp8, float scale, void* q, void* q_t, int64_t rows, int64_t cols,
              float* amax, void* colsum = nullptr);
// out = float(q) * scale_inv, rounded to out_t.
void fp8_dequantize(DType fp8, const void* q, float scale_inv, DType out_t, void* out, int64_t n);
// out (m, n) = sum_k a[m, k] b[n, k] in f32 (products of FP8 values are exact), times
// (scale_a * scale_b), plus bias (n, of out_t; may be null), rounded once to out_t.
void fp8_gemm(DType a_t, const void* a, DType b_t, const void* b, float scale_a, float scale_b, const void* bias,
              DType out_t, void* out, int64_t m, int64_t n, int64_t k);
// Scale updates (fp8_gemm.hpp): write scale and scale_inv; the delayed one rolls history.
void fp8_current_scale(float amax, float fp8_max, int margin, float* scale, float* scale_inv);
void fp8_delayed_scale(float* history, int64_t len, bool use_max, float previous, float fp8_max, int margin,
                       float* scale, float* scale_inv);

}  // namespace octet::cpu
