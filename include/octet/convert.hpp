// Host conversions between float and the 16- and 8-bit float formats, bit-exact with CUDA's
// conversion intrinsics (__float2half_rn, __float2bfloat16_rn, __nv_cvt_float_to_fp8 with
// __NV_SATFINITE):
// - f16, bf16: round to nearest even; overflow gives ±Inf; NaN gives the canonical 0x7FFF.
// - f8_e4m3 (OCP E4M3FN: bias 7, max 448, no Inf, NaN = S.1111.111) and f8_e5m2 (bias 15,
//   max 57344, Inf = S.11111.00): round to nearest even; finite values beyond max and ±Inf
//   saturate to ±max (SATFINITE); NaN gives 0x7F (CUDA canonicalizes NaN first).
// Conversions to float are exact.
#pragma once
#include <cstdint>

namespace octet {

uint16_t float_to_half_bits(float x);
float half_bits_to_float(uint16_t h);
uint16_t float_to_bf16_bits(float x);
float bf16_bits_to_float(uint16_t h);
uint8_t float_to_e4m3_bits(float x);
float e4m3_bits_to_float(uint8_t b);
uint8_t float_to_e5m2_bits(float x);
float e5m2_bits_to_float(uint8_t b);

inline constexpr float kE4M3Max = 448.0f;
inline constexpr float kE5M2Max = 57344.0f;

}  // namespace octet
