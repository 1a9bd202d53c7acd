// Host float <-> f16/bf16/fp8 conversions, written to give the same bits as CUDA's intrinsics
// (see convert.hpp for the rules). Tests compare them with the CUDA headers' host versions on
// every machine and with the device intrinsics on a GPU.
#include "octet/convert.hpp"

#include <bit>
#include <cmath>
#include <limits>

namespace octet {

uint16_t float_to_half_bits(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return 0x7fffu;                // NaN: canonical, sign dropped
  if (ax >= 0x477ff000u) return sign | 0x7c00u;        // >= 65520 (midpoint above max) and Inf
  if (ax >= 0x38800000u) {                             // normal half: >= 2^-14
    const uint32_t e = (ax >> 23) - 127 + 15;
    const uint32_t m = ax & 0x7fffffu;
    uint32_t h = (e << 10) | (m >> 13);
    const uint32_t rest = m & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // carry may bump the exponent
    return static_cast<uint16_t>(sign | h);
  }
  if (ax <= 0x33000000u) return sign;                  // <= 2^-25 (tie at 2^-25 goes to even 0)
  const uint32_t e = ax >> 23;
  const uint32_t m = (ax & 0x7fffffu) | 0x800000u;
  const uint32_t shift = 126 - e;                       // value / 2^-24 = m >> shift
  uint32_t h = m >> shift;
  const uint32_t rest = m & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1);
  if (rest > half || (rest == half && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

float half_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu;
  const uint32_t m = h & 0x3ffu;
  if (e == 0x1f) return std::bit_cast<float>(sign | 0x7f800000u | (m << 13));
  if (e != 0) return std::bit_cast<float>(sign | ((e - 15 + 127) << 23) | (m << 13));
  const float v = std::ldexp(static_cast<float>(m), -24);
  return sign ? -v : v;
}

uint16_t float_to_bf16_bits(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return 0x7fffu;  // NaN: canonical
  const uint32_t rounded = x + 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(rounded >> 16);
}

float bf16_bits_to_float(uint16_t h) { return std::bit_cast<float>(static_cast<uint32_t>(h) << 16); }

namespace {

struct Fp8Format {
  uint32_t exp_bias, significand_bits, mantissa_mask, max_norm;
  uint64_t min_denorm_o2, overflow_threshold, min_norm;
};

constexpr Fp8Format kE4M3{7, 4, 0x7, 0x7e, 0x3F50000000000000ull, 0x407D000000000000ull,
                          0x3F90000000000000ull};
constexpr Fp8Format kE5M2{15, 3, 0x3, 0x7b, 0x3EE0000000000000ull, 0x40EE000000000000ull - 1,
                          0x3F10000000000000ull};

// Round-to-nearest-even with saturation to the largest finite value (CUDA's __NV_SATFINITE),
// on the exact double value of the float.
uint8_t to_fp8(float f, const Fp8Format& F) {
  if (std::isnan(f)) return 0x7f;  // CUDA canonicalizes NaN first: 0x7F for both formats, sign dropped
  const uint64_t x = std::bit_cast<uint64_t>(static_cast<double>(f));
  const uint64_t half_ulp = 1ull << (53 - F.significand_bits - 1);
  const uint8_t sign = static_cast<uint8_t>((x >> 63) << 7);
  const uint32_t exp = static_cast<uint32_t>(((x >> 52) & 0x7ff) - 1023 + F.exp_bias) & 0xffu;
  uint32_t mantissa = static_cast<uint32_t>(x >> (53 - F.significand_bits)) & F.mantissa_mask;
  const uint64_t ax = x & 0x7fffffffffffffffull;
  uint32_t r;
  if (ax <= F.min_denorm_o2) {
    r = 0;
  } else if (ax > F.overflow_threshold) {
    r = F.max_norm;
  } else if (ax >= F.min_norm) {
    r = ((exp << (F.significand_bits - 1)) | mantissa) & 0xffu;
    const uint64_t round = x & ((half_ulp << 1) - 1);
    if (round > half_ulp || (round == half_ulp && (mantissa & 1u))) ++r;
  } else {
    const uint32_t shift = (1u - exp) & 0xffu;
    mantissa |= 1u << (F.significand_bits - 1);
    r = mantissa >> shift;
    const uint64_t round = (x | (1ull << 52)) & ((half_ulp << (shift + 1)) - 1);
    if (round > (half_ulp << shift) || (round == (half_ulp << shift) && (r & 1u))) ++r;
  }
  return static_cast<uint8_t>((r & 0xffu) | sign);
}

}  // namespace

uint8_t float_to_e4m3_bits(float x) { return to_fp8(x, kE4M3); }
uint8_t float_to_e5m2_bits(float x) { return to_fp8(x, kE5M2); }

float e4m3_bits_to_float(uint8_t b) {
  const bool neg = b & 0x80u;
  const uint32_t e = (b >> 3) & 0xfu, m = b & 0x7u;
  float v;
  if (e == 0xf && m == 0x7) v = std::numeric_limits<float>::quiet_NaN();
  else if (e == 0) v = std::ldexp(static_cast<float>(m), -9);
  else v = std::ldexp(1.0f + static_cast<float>(m) / 8.0f, static_cast<int>(e) - 7);
  return neg ? -v : v;
}

float e5m2_bits_to_float(uint8_t b) {
  // E5M2 is the top byte of an IEEE half.
  return half_bits_to_float(static_cast<uint16_t>(static_cast<uint16_t>(b) << 8));
}

}  // namespace octet
