// The index rule of 8-bit quantization and the scale rules, shared by the CPU reference
// (g++) and the CUDA kernels (nvcc): every function here is __host__ __device__ and uses only
// comparisons and single float operations, so both devices give the same bits.
// - closed_form(): the index rule (docs/quant.md, "Index rule"): k = #entries < x, then one comparison with
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
#include <cmath>
#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#define OCTET_QI_HD __host__ __device__ __forceinline__
#else
#define OCTET_QI_HD inline
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

OCTET_QI_HD uint32_t float_bits(float x) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
#endif
}

OCTET_QI_HD float bits_float(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
#endif
}

OCTET_QI_HD int closed_form(const float* code, const float* mid, float x) {
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

OCTET_QI_HD int lut_index(const LutEntry* lut, const LutShape& s, const Tables& t, float x) {
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

// The kernels' index table ("compact table", docs/quant.md, "Kernels"), built once per Code on the
// host (src/cpu/quant.cpp build_compact) from closed_form() and copied into shared memory by
// every CUDA block. It is indexed by the ordered bits o = ordered(x') of x' = x * 2^-k + (-0)
// rounded down (scale_down; ordered: a signed integer that grows with x' across both signs, o =
// bits for x' >= +0, o = -1 - |bits| for x' <= -0), cut into slots of 2^sh consecutive o: key =
// o >> sh, entry ct[key - kmin]. The scaling is exact where x' is normal; the x with |x| <
// 2^(k - 126) land in the subnormal band of x' (+0 and positive subnormals for x > 0; -0 and
// negative subnormals for +-0 and x < 0), a few slots: k is the largest with one index on
// [2^-149, 2^(k - 126)] and one on [-2^(k - 126), -0] (so +-0 shares the index of the negative
// tiny x, as in every library table), which drops the slots of the many tiny binades, all of one
// index, from the table (dynamic map: 11.5 KiB; 63.5 KiB without the scaling). No flush to zero:
// fma.ftz would flush subnormal inputs too, and positive subnormal x would join the zeros. The
// index is monotone in o, and the shift is the largest one that leaves at most one step in any
// slot. An entry is
// (key << (sh + 8)) + e (mod 2^32), e = ((t - 1) << 8 | q0) + 1 for a step at low bits t (index
// q0 below t, q0 + 1 from t on) or e = ((2^sh - 1) << 8 | q) + 1 for a constant slot; then,
// with w = o << 8 (mod 2^32, so the key's low bits match the entry's), index = entry - 1 + (w >=
// entry) in the low byte: on the GPU one subtract that sets the carry and one add that takes it.
// (A constant slot of index 255 whose entry would wrap to 0 stores (key << (sh + 8)) - 1, which
// every w reaches: 255 again.)
// The table covers the slots of x in [floor, hi] (floor = code[0]; x clamped to it first: NaN
// and x < code[0] take code[0], whose index, 0, is theirs) and, when noclamp, of every x in
// [-(1 + 2^-23), 1 + 2^-23]: the quantize kernels' x (v * RN(1 / absmax) or v / absmax, |v| <=
// absmax) never leaves that range, and is NaN only where v is NaN or Inf, so tiles free of both
// skip the clamp. entries == 0: no shift fits kMaxCompact entries (crowded or odd tables); the
// kernels use lut_index() then.
struct Compact {
  float floor = 0;  // code[0]
  float hi = 0;     // max(1 + 2^-23, code[0]): the largest x of the clamped domain
  float scale = 1;  // 2^-k
  int32_t k = 0;
  int32_t sh = 23;  // 2 <= sh <= 23
  int32_t kmin = 0;     // key of entry 0
  int32_t entries = 0;  // 0: none, use lut_index()
  int32_t noclamp = 0;  // 1: the table also covers [-(1 + 2^-23), 1 + 2^-23] without the clamp
};

inline constexpr int kMaxCompact = 16384;  // entries (64 KiB)
inline constexpr float kMaxKernelX = 0x1.000002p0f;  // 1 + 2^-23

OCTET_QI_HD int32_t ordered(float x) {
  const uint32_t b = float_bits(x);
  return static_cast<int32_t>(b ^ (static_cast<uint32_t>(static_cast<int32_t>(b) >> 31) & 0x7FFFFFFFu));
}

OCTET_QI_HD float from_ordered(int32_t o) {
  const uint32_t u = static_cast<uint32_t>(o);
  return bits_float(o < 0 ? u ^ 0x7FFFFFFFu : u);
}

OCTET_QI_HD float fmax_hd(float a, float b) {
#ifdef __CUDA_ARCH__
  return fmaxf(a, b);
#else
  return a > b || b != b ? a : b;  // IEEE maxNum: NaN loses (both NaN: NaN)
#endif
}

// x * scale + (-0) rounded toward -Inf (fma.rm; scale a power of two): exact where the result is
// normal; +-0 becomes -0; a tiny result rounds down onto the subnormal grid (a positive one may
// become +0, a negative one stays below -0).
OCTET_QI_HD float scale_down(float x, float scale) {
#ifdef __CUDA_ARCH__
  float y;
  asm("fma.rm.f32 %0, %1, %2, 0f80000000;" : "=f"(y) : "f"(x), "f"(scale));
  return y;
#else
  const double p = static_cast<double>(x) * scale;  // exact (or NaN)
  if (p == 0.0) return -0.0f;
  if (p > -0x1p-126 && p < 0x1p-126) return static_cast<float>(std::floor(p * 0x1p149) * 0x1p-149);  // exact
  return static_cast<float>(p);  // exact: a normal float times a power of two, or NaN
#endif
}

// The index (low byte; higher bits are garbage) from a slot's entry e: e - 1 + (w >= e).
OCTET_QI_HD uint32_t compact_step(uint32_t e, uint32_t w) { return e - 1u + (w >= e ? 1u : 0u); }

// The kernels' lookup, as the host evaluates it (kernels/quant_lookup.cuh compact_lookup is the same
// arithmetic in IMADs): clamp = false only for x in [-(1 + 2^-23), 1 + 2^-23] and c.noclamp.
OCTET_QI_HD uint32_t compact_index(const uint32_t* ct, const Compact& c, float x, bool clamp = true) {
  const int32_t o = ordered(scale_down(clamp ? fmax_hd(x, c.floor) : x, c.scale));
  return compact_step(ct[(o >> c.sh) - c.kmin], static_cast<uint32_t>(o) << 8);
}

// a * b and a + b rounded once, with the GPU's NaN: any NaN result is 0x7FFFFFFF on both devices
// (x86 returns an operand's payload or 0xFFC00000), so dequantized and fake-quantized values match
// bit for bit also where the absmax is Inf or NaN.
OCTET_QI_HD float canonical_nan(float y) { return y != y ? bits_float(0x7FFFFFFFu) : y; }

OCTET_QI_HD float mul_nan(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return canonical_nan(a * b);
#endif
}

OCTET_QI_HD float add_nan(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return canonical_nan(a + b);
#endif
}

struct Scale {
  float s, r;
};

OCTET_QI_HD float rcp_rn(float a) {
#ifdef __CUDA_ARCH__
  return __frcp_rn(a);
#else
  return 1.0f / a;
#endif
}

OCTET_QI_HD float mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

// absmax == 0 (or NaN, which a block max cannot give) -> r = 0: zeros map to the code of 0.
OCTET_QI_HD Scale block_scale(float absmax) {
  if (!(absmax > 0.0f)) return {1.0f, 0.0f};
  const float s = absmax < 0x1p-126f ? 0x1p24f : (absmax >= 0x1p126f ? 0x1p-24f : 1.0f);
  return {s, rcp_rn(mul_rn(absmax, s))};
}

OCTET_QI_HD float block_x(float v, Scale sc) { return mul_rn(mul_rn(v, sc.s), sc.r); }

// Global path: x = v / absmax (IEEE); absmax == 0 (an all-zero tensor) -> x = v * 0.
OCTET_QI_HD float global_x(float v, float absmax) {
#ifdef __CUDA_ARCH__
  return absmax == 0.0f ? __fmul_rn(v, 0.0f) : __fdiv_rn(v, absmax);
#else
  return absmax == 0.0f ? v * 0.0f : v / absmax;
#endif
}

}  // namespace octet::quant_index
