// Host element access for every dtype: load as float/double, store with CUDA's rounding,
// and a dispatcher from DType to the host type. Used by all CPU reference kernels.
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "octet/convert.hpp"
#include "octet/dtype.hpp"
#include "octet/error.hpp"

namespace octet::cpu {

template <class T> struct type_tag { using type = T; };

inline double load_f64(float v) { return v; }
inline double load_f64(double v) { return v; }
inline double load_f64(Half v) { return half_bits_to_float(v.bits); }
inline double load_f64(BFloat16 v) { return bf16_bits_to_float(v.bits); }
inline double load_f64(Float8E4M3 v) { return e4m3_bits_to_float(v.bits); }
inline double load_f64(Float8E5M2 v) { return e5m2_bits_to_float(v.bits); }
inline double load_f64(uint8_t v) { return v; }
inline double load_f64(int32_t v) { return v; }
inline double load_f64(int64_t v) { return static_cast<double>(v); }

template <class T> inline float load_f32(T v) { return static_cast<float>(load_f64(v)); }
inline float load_f32(float v) { return v; }

// float -> integer: truncation toward zero, NaN -> 0, saturating at the type's range.
template <class I> inline I saturate_int(double v) {
  if (std::isnan(v)) return 0;
  if (v <= static_cast<double>(std::numeric_limits<I>::min())) return std::numeric_limits<I>::min();
  if (v >= static_cast<double>(std::numeric_limits<I>::max())) return std::numeric_limits<I>::max();
  return static_cast<I>(v);
}

// Store a double: f64 exact; f32 rounds once; 16/8-bit floats round via f32 (double rounding
// from f64 is possible and documented); integers truncate and saturate.
template <class T> inline T store(double v) {
  if constexpr (std::is_same_v<T, double>) return v;
  else if constexpr (std::is_same_v<T, float>) return static_cast<float>(v);
  else if constexpr (std::is_same_v<T, Half>) return Half{float_to_half_bits(static_cast<float>(v))};
  else if constexpr (std::is_same_v<T, BFloat16>) return BFloat16{float_to_bf16_bits(static_cast<float>(v))};
  else if constexpr (std::is_same_v<T, Float8E4M3>) return Float8E4M3{float_to_e4m3_bits(static_cast<float>(v))};
  else if constexpr (std::is_same_v<T, Float8E5M2>) return Float8E5M2{float_to_e5m2_bits(static_cast<float>(v))};
  else return saturate_int<T>(v);
}

// Calls f(type_tag<T>{}) for the host type of any dtype.
template <class F> decltype(auto) visit_dtype(DType t, F&& f) {
  switch (t) {
    case DType::f32: return f(type_tag<float>{});
    case DType::f64: return f(type_tag<double>{});
    case DType::f16: return f(type_tag<Half>{});
    case DType::bf16: return f(type_tag<BFloat16>{});
    case DType::u8: return f(type_tag<uint8_t>{});
    case DType::i32: return f(type_tag<int32_t>{});
    case DType::i64: return f(type_tag<int64_t>{});
    case DType::f8_e4m3: return f(type_tag<Float8E4M3>{});
    case DType::f8_e5m2: return f(type_tag<Float8E5M2>{});
  }
  fail("visit_dtype", "unknown dtype");
}

// Calls f(type_tag<T>{}) for f32, f64, f16 and bf16; throws for anything else.
template <class F> decltype(auto) visit_float(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::f32: return f(type_tag<float>{});
    case DType::f64: return f(type_tag<double>{});
    case DType::f16: return f(type_tag<Half>{});
    case DType::bf16: return f(type_tag<BFloat16>{});
    default: fail(op, cat("dtype ", dtype_name(t), " is not supported here"));
  }
}

}  // namespace octet::cpu
