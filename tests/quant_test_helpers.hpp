// Helpers shared by the files of the quant suite (tests/test_quant.cpp, test_quant_behaviour.cpp,
// test_quant_cuda.cpp): special floats, the dtypes and blocksizes the cases loop over, a float's
// bits, a literal port of bitsandbytes' index search, the library's code tables with their golden
// names and SHA-256, a crowded user table (no compact table fits it) and host tensors.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <vector>

#include "kernels/quant_index.cuh"
#include "tests/helpers.hpp"

namespace octet::quant_test {

inline constexpr float kInf = std::numeric_limits<float>::infinity();
inline constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
inline constexpr std::initializer_list<DType> kDtypes = {DType::f32, DType::f16, DType::bf16};
inline constexpr std::initializer_list<int64_t> kBlocksizes = {32, 64, 128, 256, 512, 1024, 2048, 4096};

inline uint32_t bits(float x) { return quant_index::float_bits(x); }
inline float from_bits(uint32_t u) { return quant_index::bits_float(u); }

// ---- bitsandbytes' dQuantize (csrc/kernels.cu, non-stochastic), ported literally ----
inline int bnb_index(const float* code, float x) {
  int pivot = 127, upper_pivot = 255, lower_pivot = 0;
  float lower = -1.0f, upper = 1.0f;
  float val = code[pivot];
  for (int i = 64; i > 0; i >>= 1) {
    if (x > val) {
      lower_pivot = pivot;
      lower = val;
      pivot += i;
    } else {
      upper_pivot = pivot;
      upper = val;
      pivot -= i;
    }
    val = code[pivot];
  }
  if (upper_pivot == 255) upper = code[upper_pivot];
  if (lower_pivot == 0) lower = code[lower_pivot];
  if (x > val) {
    const float midpoint = (upper + val) * 0.5f;
    return x > midpoint ? upper_pivot : pivot;
  }
  const float midpoint = (lower + val) * 0.5f;
  return x < midpoint ? lower_pivot : pivot;
}

struct NamedTable {
  const char* name;
  Code code;
  Tensor table;
  const char* golden;
  const char* sha;  // SHA-256 of bitsandbytes 0.49.2's table; "" where none is checked
};

inline std::vector<NamedTable> tables() {
  return {
      {"dynamic_signed", Code::dynamic(true), create_dynamic_map(true, 7, 8), "map.dynamic_signed",
       "e732639a65f497b4ad684bb166a4467708255edd5207757de8b8f0c7e1fda89c"},
      {"dynamic_unsigned", Code::dynamic(false), create_dynamic_map(false, 7, 8), "map.dynamic_unsigned",
       "305f002cc11278fb769d13b25b9fd0c7c83c8402c40a878fe086f4039fde6398"},
      {"fp8_e4m3", Code::fp8_e4m3(), create_fp8_map(true, 4, 3, 8), "map.fp8_e4m3",
       "f3c007a4cafc83fe599bffde8d83c3b00a6c648306af949f2d0a051da02832aa"},
      {"fp8_e5m2", Code::fp8_e5m2(), create_fp8_map(true, 5, 2, 8), "map.fp8_e5m2",
       "0da7c4e2990b302a360d0664262e0bce8012809e65954885e9b573c00fd57b04"},
      {"linear_signed", Code::linear(), create_linear_map(true, 8), "map.linear_signed", ""},
  };
}

// 256 adjacent floats up to 1.0, inside the kernels' range of x: index steps one ulp apart, closer
// than any slot of a compact table can hold.
inline std::vector<float> crowded_table() {
  std::vector<float> v(256);
  for (int i = 0; i < 256; ++i) v[i] = 1.0f - static_cast<float>(255 - i) * 0x1p-24f;
  return v;
}

inline Tensor host_tensor(const std::vector<float>& v, DType t = DType::f32) { return Tensor::from_vector(v).to(t); }

using test::view;

}  // namespace octet::quant_test
