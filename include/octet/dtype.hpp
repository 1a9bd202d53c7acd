// Element types of octet tensors and the C++ types that stand for them on the host.
// f16/bf16/fp8 are stored as raw bits (Half, BFloat16, Float8E4M3, Float8E5M2); convert.hpp
// has the conversions, which round exactly as CUDA's intrinsics do.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace octet {

enum class DType : uint8_t { f32, f64, f16, bf16, u8, i32, i64, f8_e4m3, f8_e5m2 };

struct Half { uint16_t bits; };
struct BFloat16 { uint16_t bits; };
struct Float8E4M3 { uint8_t bits; };
struct Float8E5M2 { uint8_t bits; };

size_t dtype_size(DType t);
std::string_view dtype_name(DType t);  // "f32", "bf16", ...
bool is_floating(DType t);             // f32, f64, f16, bf16, f8_*

template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::f32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::f64; };
template <> struct dtype_of<Half> { static constexpr DType value = DType::f16; };
template <> struct dtype_of<BFloat16> { static constexpr DType value = DType::bf16; };
template <> struct dtype_of<uint8_t> { static constexpr DType value = DType::u8; };
template <> struct dtype_of<int32_t> { static constexpr DType value = DType::i32; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::i64; };
template <> struct dtype_of<Float8E4M3> { static constexpr DType value = DType::f8_e4m3; };
template <> struct dtype_of<Float8E5M2> { static constexpr DType value = DType::f8_e5m2; };
template <class T> inline constexpr DType dtype_of_v = dtype_of<T>::value;

}  // namespace octet
