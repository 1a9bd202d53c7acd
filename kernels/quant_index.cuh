// The index rule of 8-bit quantization and the scale rules, shared by the CPU reference
// (g++) and the CUDA kernels (nvcc): every function here is __host__ __device__ and uses only
// comparisons and single float operations, so both devices give the same bits.
// - closed_form(): the spec's rule (docs/quant.md): k = #entries < x, then one comparison with
//   the float32 midpoint mid[a] = (code[a] + code[a+1]) * 0.5 of the bracketing pair, ties to
//   the even index, NaN -> 0, no clamping. Identical to bitsandbytes' binary search.
// - lut_index(): the kernels' fast path. Buckets of the float's bits (per sign: an exponent
//   window and m mantissa bits); each bucket stores the exact bit pattern `thr` where the index steps and
//   the index below/above it, so one shared-memory load and one integer compare give the
//   index. Built on the host from closed_form() (src/cpu/quant.cpp build_index_lut); buckets
//   that would hold more than one step are flagged `slow` and fall back to closed_form().
// - block_scale(): x = (v * s) * r, r = RN(1 / (absmax * s)); s = 1 unless absmax is
//   subnormal (s = 2^24) or >= 2^126 (s = 2^-24), which keeps r a normal float.
#pragma once
#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#define OCTET_HD __host__ __device__ __forceinline__
#else
#define OCTET_HD inline
#endif

namespace octet::quant_index {

// A validated code table and its 255 float32 midpoints (2048 bytes, copied as is to the GPU).
struct Tables {
  float code[256];
  float mid[255];  // mid[j] = (code[j] + code[j + 1]) * 0.5f
  float pad = 0;
};

struct alignas(8) LutEntry {
  uint32_t thr;  // first |x| bit pattern of the bucket with index `above` (0x80000000: none)
  uint8_t below, above;
  uint16_t slow;  // 1: more than one step in the bucket, use closed_form()
};

// Each sign half has its own buckets: bucket b of half h holds the |x| bit patterns u with
// clamp((u >> shift[h]) - bias[h], 0, buckets[h] - 1) == b, stored at entry first[h] + b.
struct LutShape {
  int32_t shift[2] = {23, 23};
  int32_t bias[2] = {0, 0};
  int32_t buckets[2] = {1, 1};
  int32_t first[2] = {0, 1};
};

inline constexpr int kMaxLutEntries = 4096;  // both halves: at most 32 KiB of shared memory

OCTET_HD uint32_t float_bits(float x) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
#endif
}

OCTET_HD float bits_float(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
#endif
}

OCTET_HD int closed_form(const float* code, const float* mid, float x) {
  if (!(x > code[0])) return 0;     // NaN or at/below the first entry
  int k = code[128] < x ? 128 : 0;  // k: the last entry below x
  for (int step = 64; step > 0; step >>= 1)
    if (code[k + step] < x) k += step;
  const int a = k < 254 ? k : 254;  // bracketing pair (a, a + 1)
  const float m = mid[a];
  if (x > m) return a + 1;
  if (x < m) return a;
  return (a & 1) ? a + 1 : a;
}

OCTET_HD int lut_index(const LutEntry* lut, const LutShape& s, const Tables& t, float x) {
  const uint32_t bits = float_bits(x);
  const uint32_t u = bits & 0x7FFFFFFFu;
  if (u > 0x7F800000u) return 0;  // NaN
  const bool neg = bits >> 31;
  const int buckets = neg ? s.buckets[1] : s.buckets[0];
  int b = static_cast<int>(u >> (neg ? s.shift[1] : s.shift[0])) - (neg ? s.bias[1] : s.bias[0]);
  b = b < 0 ? 0 : (b >= buckets ? buckets - 1 : b);
  const LutEntry e = lut[(neg ? s.first[1] : s.first[0]) + b];
  if (e.slow) return closed_form(t.code, t.mid, x);
  return u >= e.thr ? e.above : e.below;
}

struct Scale {
  float s, r;
};

OCTET_HD float rcp_rn(float a) {
#ifdef __CUDA_ARCH__
  return __frcp_rn(a);
#else
  return 1.0f / a;
#endif
}

OCTET_HD float mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

// absmax == 0 (or NaN, which a block max cannot give) -> r = 0: zeros map to the code of 0.
OCTET_HD Scale block_scale(float absmax) {
  if (!(absmax > 0.0f)) return {1.0f, 0.0f};
  const float s = absmax < 0x1p-126f ? 0x1p24f : (absmax >= 0x1p126f ? 0x1p-24f : 1.0f);
  return {s, rcp_rn(mul_rn(absmax, s))};
}

OCTET_HD float block_x(float v, Scale sc) { return mul_rn(mul_rn(v, sc.s), sc.r); }

// Global path: x = v / absmax (IEEE); absmax == 0 (an all-zero tensor) -> x = v * 0.
OCTET_HD float global_x(float v, float absmax) {
#ifdef __CUDA_ARCH__
  return absmax == 0.0f ? __fmul_rn(v, 0.0f) : __fdiv_rn(v, absmax);
#else
  return absmax == 0.0f ? v * 0.0f : v / absmax;
#endif
}

}  // namespace octet::quant_index
