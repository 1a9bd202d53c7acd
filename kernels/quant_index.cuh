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

// The kernels' index table ("compact LUT", docs/quant.md "Kernels"), built once per Code on
// the host from the 8-byte LUT (build_compact) and copied into shared memory by every CUDA
// block: one shift sh and one |x| window [lo, hi] for both signs, 4-byte entries interleaved by
// sign (slot 2 * (key - kbase) + sign, key = bits(m) >> sh, m = max(|x1|, lo), x1 = max(x,
// code[0]): NaN and x below code[0] take code[0], whose index, 0, is theirs). Valid for
// x <= hi and NaN: the window reaches past 1 + 2^-23 and |code[0]|, and the kernels' x
// (v * RN(1/absmax) or v / absmax, |v| <= absmax) never exceeds 1 + 2^-23. An
// entry is (((t - 1) << 8) | q0) + 1 for a step at low bits t of the slot (index q0 -> q0 + 1, t
// counted from the slot's top for x < 0, whose index falls with |x|), or
// (((2^sh - 1) << 8) | q) + 1 for a constant slot; then index = e - 1 + (w >= e) in the low byte,
// w = low sh bits of bits(m) (complemented for x < 0) << 8: on the GPU one subtract that sets the
// carry and one add that takes it. (A low byte of 255 never steps, so the + 1 never changes an
// index; entries stay below 2^31.) Equal to lut_index() on every float when the build succeeds;
// otherwise (crowded or odd tables) entries == 0 and the kernels use lut_index() itself.
struct Compact {
  float lo = 0, hi = 0;  // the window of |x|: its first bit pattern - 1 (or 0) and its last one
  float floor = 0;       // code[0]
  int32_t sh = 23;
  uint32_t mask8 = 0;   // ((1 << sh) - 1) << 8
  int32_t kbase = 0;    // bits(lo) >> sh
  int32_t entries = 0;  // 2 * keys; 0: too large or not representable, use lut_index()
};

inline constexpr int kMaxCompact = 16384;  // entries (64 KiB)

// Host: the geometry from the LUT's shape (halves with one bucket take no part in the window)
// and the table's first entry code0.
inline Compact compact_shape(const LutShape& s, float code0) {
  Compact c;
  uint32_t lo = 0xFFFFFFFFu, hi = 0;
  for (int h = 0; h < 2; ++h) {
    if (s.buckets[h] <= 1) continue;
    c.sh = s.shift[h] < c.sh ? s.shift[h] : c.sh;
    const uint32_t l = static_cast<uint32_t>(s.bias[h]) << s.shift[h];
    const uint32_t e = (static_cast<uint32_t>(s.bias[h] + s.buckets[h]) << s.shift[h]) - 1;
    lo = l < lo ? l : lo;
    hi = e > hi ? e : hi;
  }
  if (hi == 0) lo = 0, hi = 0x7F7FFFFFu;  // no half with several buckets: every finite binade
  // Up to the slot holding the largest |x1| of the kernels: max(1 + 2^-23, |code0|).
  const uint32_t c0 = float_bits(code0) & 0x7FFFFFFFu, need = c0 > 0x3F800001u ? c0 : 0x3F800001u;
  const uint32_t need_end = need >= 0x7F800000u ? 0x7FFFFFFFu : need | ((1u << c.sh) - 1);
  hi = need_end > hi ? need_end : hi;
  const uint32_t lc = lo > 0 ? lo - 1 : 0;
  c.lo = bits_float(lc);
  c.hi = bits_float(hi);
  c.floor = code0;
  c.mask8 = ((1u << c.sh) - 1) << 8;
  c.kbase = static_cast<int32_t>(lc >> c.sh);
  const int64_t entries = 2 * (int64_t{hi >> c.sh} - c.kbase + 1);
  c.entries = entries <= kMaxCompact && c.sh >= 1 ? static_cast<int32_t>(entries) : 0;  // kernels: 1 <= sh <= 23
  return c;
}

// Host: the compact entries (c.entries of them) from the LUT into ct; false when the table does
// not fit the format (a slow bucket, a step of more than one index, or a one-bucket half whose
// step lies outside the window). A slot lies inside one bucket of the 8-byte LUT (its shift is
// at most the bucket's), so that bucket's entry gives the slot's index on both ends.
inline bool build_compact(const Compact& c, const LutEntry* lut, const LutShape& s, uint32_t* ct) {
  const uint32_t lc = float_bits(c.lo), hi = float_bits(c.hi), mask = (1u << c.sh) - 1;
  bool bad = false;
  for (int i = 0; i < c.entries; ++i) {
    const int h = i & 1;
    const uint32_t us = static_cast<uint32_t>(c.kbase + (i >> 1)) << c.sh, ue = us + mask;
    int b = static_cast<int>(us >> s.shift[h]) - s.bias[h];
    b = b < 0 ? 0 : (b >= s.buckets[h] ? s.buckets[h] - 1 : b);
    const LutEntry& E = lut[s.first[h] + b];
    const int q0 = us >= E.thr ? E.above : E.below, q1 = ue >= E.thr ? E.above : E.below;
    const uint32_t t = E.thr - us;  // a step inside the slot: at low bits t in [1, mask]
    bad |= E.slow || (q1 != q0 && q1 != q0 + (h ? -1 : 1));
    const uint32_t step = h ? (mask - t) << 8 | static_cast<uint32_t>(q1) : (t - 1) << 8 | static_cast<uint32_t>(q0);
    ct[i] = 1 + (q1 == q0 ? mask << 8 | static_cast<uint32_t>(q0) : step);
  }
  // Outside the window a clamped |x| keeps its index: true for halves of several buckets (the
  // window holds their steps); a one-bucket half's step must lie in (lc, hi].
  for (int h = 0; h < 2; ++h) {
    if (s.buckets[h] != 1) continue;
    const LutEntry& E = lut[s.first[h]];
    bad |= E.slow || (E.below != E.above && (E.thr <= lc || E.thr > hi));
  }
  return !bad;
}

OCTET_QI_HD float fmax_hd(float a, float b) {
#ifdef __CUDA_ARCH__
  return fmaxf(a, b);
#else
  return a > b || b != b ? a : b;  // IEEE maxNum: NaN loses (both NaN: NaN)
#endif
}

// The compact-table slot of x (plus 2 * kbase: subtract it, or index a table pointer biased by
// it) and the compared bits w; x <= hi or NaN. Per element: 2 float max, 2 shifts, 1 funnel
// shift, 1 logic op; then one 4-byte load and compact_step (1 compare, 1 add).
struct CompactKey {
  uint32_t key, w;
};

OCTET_QI_HD CompactKey compact_key(const Compact& c, float x) {
  const float x1 = fmax_hd(x, c.floor);  // NaN, x < code[0] -> code[0] (index 0, as theirs)
#ifdef __CUDA_ARCH__
  const float ax = fabsf(x1);
#else
  const float ax = __builtin_fabsf(x1);
#endif
  const float m = fmax_hd(ax, c.lo);  // no upper clamp: x1 <= hi and |code[0]| <= hi
  const uint32_t mb = float_bits(m), sb = float_bits(x1);
#ifdef __CUDA_ARCH__
  const uint32_t key = __funnelshift_l(sb, mb >> c.sh, 1);  // (mb >> sh) << 1 | sign
#else
  const uint32_t key = (mb >> c.sh) << 1 | sb >> 31;
#endif
  return {key, ((mb << 8) ^ static_cast<uint32_t>(static_cast<int32_t>(sb) >> 31)) & c.mask8};
}

// The index (low byte; higher bits are garbage) from the slot's entry e: e - 1 + (w >= e).
OCTET_QI_HD uint32_t compact_step(uint32_t e, uint32_t w) {
#ifdef __CUDA_ARCH__
  uint32_t q;  // w - e sets the carry exactly when w >= e; e + 0xFFFFFFFF + carry
  asm("{\n\t.reg .u32 d;\n\tsub.cc.u32 d, %1, %2;\n\taddc.u32 %0, %2, 0xFFFFFFFF;\n\t}"
      : "=r"(q)
      : "r"(w), "r"(e));
  return q;
#else
  return e - 1u + (w >= e ? 1u : 0u);
#endif
}

OCTET_QI_HD uint32_t compact_index(const uint32_t* ct, const Compact& c, float x) {
  const CompactKey k = compact_key(c, x);
  return compact_step(ct[k.key - 2 * static_cast<uint32_t>(c.kbase)], k.w);
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
