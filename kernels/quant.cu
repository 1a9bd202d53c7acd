// CUDA kernels of the quant family: blockwise and global quantize (optionally fused with the
// dequantize: fake-quantize), the global absmax reduction, dequantize, nested-absmax helpers.
// Layout: persistent groups of 256 threads (one to four per CUDA block; dequantize: one CUDA
// block per tile) walk tiles of 4096 elements; in a tile each warp owns 512 consecutive elements as rows of 16-byte vectors (lane l
// of row j holds elements j*32*V + l*V .. +V), so every load and store of a warp is contiguous. A
// quantization block (32..4096 elements) never straddles a tile. The code values and the compact
// index table live in shared memory, set up once per CUDA block.
// Throughput (docs/quant.md "Kernels"): full aligned tiles take a branch-free path (the next
// tile's 16-byte loads are issued before this tile is computed; one 4-byte lookup per element in
// the Code's compact table, quant_index.cuh, without the clamp of x where a tile holds no NaN or
// Inf); tables that do not fit it use lut_index() on the LUT in global memory; partial or
// unaligned tiles take a checked path.
// Global quantization of large f16/bf16 tensors maps each element's 16 bits through a table of
// all 65536 patterns built on the device (table16_kernel / table16_map_kernel). The blockwise
// fake-quantize kernel can also reduce max |x| of a second tensor (SideAbsmax: the FP8 forward's B).
// Float arithmetic uses explicit _rn intrinsics (the compact table's key rounds down on purpose:
// qi::scale_down): no contraction, no flush-to-zero.
#include <algorithm>
#include <mutex>
#include <vector>

#include "kernels/common.cuh"
#include "kernels/quant.cuh"

namespace octet::kernels {
namespace {
namespace qi = quant_index;

constexpr int kThreads = 256;  // a group: the threads that share a tile
constexpr int kPerThread = 16;
constexpr int kWarpTile = 32 * kPerThread;    // 512
constexpr int kTile = kThreads * kPerThread;  // 4096, the largest blocksize
constexpr unsigned kFull = 0xffffffffu;

// A group of the quantize kernel: kThreads threads that walk their own tiles, synchronize on their
// own named barrier (1 + id; 0 is __syncthreads) and own warp_max (2 * kThreads / 32 floats). A
// CUDA block holds NG groups (make_group).
struct Group {
  int id, tid;           // group in the block, thread in the group
  int64_t index, count;  // group in the grid, groups in the grid
  float* warp_max;
  __device__ __forceinline__ void sync() const {
    asm volatile("bar.sync %0, %1;" ::"r"(1 + id), "n"(kThreads) : "memory");
  }
};

template <int NG>
__device__ __forceinline__ Group make_group(float (*warp_max)[2 * kThreads / 32]) {
  // (A shuffle from lane 0 lets the compiler see the id is the same in the whole warp.)
  const int id = NG == 1 ? 0 : __shfl_sync(0xffffffffu, static_cast<int>(threadIdx.x) / kThreads, 0);
  return {id, static_cast<int>(threadIdx.x) - id * kThreads, int64_t{blockIdx.x} * NG + id, int64_t{gridDim.x} * NG,
          warp_max[id]};
}

template <class T>
constexpr int vec_width() {
  return 16 / static_cast<int>(sizeof(T));
}

// The side job of the blockwise fake-quantize kernel (kernels::SideAbsmax, typed).
template <class T>
struct SideMax {
  const T* x = nullptr;
  int64_t n = 0;
  unsigned* partial = nullptr;
  bool aligned = false;
};

// V elements from e on as floats; elements at or past n read as 0.
// Stream: read once (evict-first); otherwise an ordinary L2-cached read.
template <class T, int V, bool Stream = true>
__device__ __forceinline__ void load_vec(const T* __restrict__ p, int64_t e, int64_t n, bool aligned, float (&v)[V]) {
  if (aligned && e + V <= n) {
    union {
      uint4 raw;
      T t[V];
    } u;
    u.raw = Stream ? __ldcs(reinterpret_cast<const uint4*>(p + e)) : __ldg(reinterpret_cast<const uint4*>(p + e));
#pragma unroll
    for (int q = 0; q < V; ++q) v[q] = load_f32(u.t[q]);
  } else {
#pragma unroll
    for (int q = 0; q < V; ++q) v[q] = e + q < n ? load_f32(p[e + q]) : 0.0f;
  }
}

template <class T, int V>
__device__ __forceinline__ void store_vec(T* __restrict__ p, int64_t e, int64_t n, bool aligned, const float (&y)[V]) {
  if (aligned && e + V <= n) {
    union {
      uint4 raw;
      T t[V];
    } u;
#pragma unroll
    for (int q = 0; q < V; ++q) u.t[q] = store_f32<T>(y[q]);
    *reinterpret_cast<uint4*>(p + e) = u.raw;
  } else {
#pragma unroll
    for (int q = 0; q < V; ++q)
      if (e + q < n) p[e + q] = store_f32<T>(y[q]);
  }
}

template <int V>
union CodeVec {
  std::conditional_t<V == 4, uint32_t, uint2> raw;
  uint8_t c[V];
};

template <int V>
__device__ __forceinline__ void store_codes(uint8_t* __restrict__ p, int64_t e, int64_t n, bool aligned,
                                            const CodeVec<V>& c) {
  if (aligned && e + V <= n) {
    *reinterpret_cast<decltype(c.raw)*>(p + e) = c.raw;
  } else {
#pragma unroll
    for (int q = 0; q < V; ++q)
      if (e + q < n) p[e + q] = c.c[q];
  }
}

template <int V>
__device__ __forceinline__ CodeVec<V> load_codes(const uint8_t* __restrict__ p, int64_t e, int64_t n, bool aligned) {
  CodeVec<V> c;
  if (aligned && e + V <= n) {
    c.raw = *reinterpret_cast<const decltype(c.raw)*>(p + e);
  } else {
#pragma unroll
    for (int q = 0; q < V; ++q) c.c[q] = e + q < n ? p[e + q] : 0;
  }
  return c;
}

// m[j]: |max| of vector row j of this lane. On return m[j] is the absmax of the quantization
// block that holds row j's vector: registers across rows, shuffles inside a row, shared memory
// across warps.
template <int B, int V, int J>
__device__ __forceinline__ void block_absmax(float (&m)[J], const Group& grp, int parity) {
  constexpr int kLanes = B / V;  // lanes a block covers in one row
  if constexpr (kLanes <= 32) {
#pragma unroll
    for (int off = 1; off < kLanes; off <<= 1)
#pragma unroll
      for (int j = 0; j < J; ++j) m[j] = fmaxf(m[j], __shfl_xor_sync(kFull, m[j], off));
  } else {
    // The J rows of a lane fall into J / G blocks: reduce those in registers first, then
    // shuffle one value per block across the warp, then (blocks wider than J rows) across warps.
    constexpr int kRows = kLanes / 32;  // consecutive rows per block
    constexpr int G = kRows < J ? kRows : J, NG = J / G;
    float r[NG];
#pragma unroll
    for (int g = 0; g < NG; ++g) {
      r[g] = m[g * G];
#pragma unroll
      for (int k = 1; k < G; ++k) r[g] = fmaxf(r[g], m[g * G + k]);
    }
    // The values are >= 0 and not NaN, so their bits order like them: one integer max over
    // the warp (REDUX) instead of five shuffles and maxima.
#pragma unroll
    for (int g = 0; g < NG; ++g) r[g] = __uint_as_float(__reduce_max_sync(kFull, __float_as_uint(r[g])));
    if constexpr (kRows > J) {
      constexpr int kWarps = kRows / J;  // consecutive warps per block
      const int warp = grp.tid >> 5;
      // Two buffers, alternating by tile: the reads of a buffer two tiles ago are ordered
      // before this write by the last tile's barrier (the group's).
      float* warp_max = grp.warp_max + (parity & 1) * (kThreads / 32);
      if ((threadIdx.x & 31) == 0) warp_max[warp] = r[0];
      grp.sync();
      uint32_t u = 0;
#pragma unroll
      for (int k = 0; k < kWarps; ++k) u = max(u, __float_as_uint(warp_max[warp / kWarps * kWarps + k]));
      r[0] = __uint_as_float(u);
    }
#pragma unroll
    for (int j = 0; j < J; ++j) m[j] = r[j / G];
  }
}

// Shared memory of the quantize kernels: with fake outputs, the code values replicated per lane
// (rep[q * 32 + lane]: the lookup of code[q] is free of bank conflicts; 32 KiB), then the
// compact table (copied from the Code's device image, where the host built it once:
// quant_index.cuh build_compact). No barrier here: the caller has one before the first lookup.
constexpr int kRepFloats = 256 * 32;

__host__ __device__ constexpr size_t rep_bytes(bool fake) { return fake ? sizeof(float) * kRepFloats : 0; }

__device__ __forceinline__ void load_index(uint32_t* smem, bool fake, const qi::Tables* __restrict__ gtab,
                                           const qi::Compact& c, int32_t compact_offset) {
  const int t = static_cast<int>(threadIdx.x);
  if (fake && t < 256) {  // thread t writes row t; the 16-byte column is rotated by t (4 wavefronts per store)
    const float v = __ldg(gtab->code + t);
    float4* row = reinterpret_cast<float4*>(smem) + t * 8;
#pragma unroll
    for (int k = 0; k < 8; ++k) row[(k + t) & 7] = make_float4(v, v, v, v);
  }
  uint4* ct = reinterpret_cast<uint4*>(smem + (fake ? kRepFloats : 0));
  const uint4* src = reinterpret_cast<const uint4*>(reinterpret_cast<const uint8_t*>(gtab) + compact_offset);
  for (int i = t; i < (c.entries + 3) / 4; i += static_cast<int>(blockDim.x)) ct[i] = __ldg(src + i);
}

template <class T, int V>
__device__ __forceinline__ void unpack(const uint4& raw, float (&v)[V]) {
  union {
    uint4 raw;
    T t[V];
  } u;
  u.raw = raw;
#pragma unroll
  for (int q = 0; q < V; ++q) v[q] = load_f32(u.t[q]);
}

// Bytes 0 of q[0..V) packed into V code bytes (PRMT).
template <int V>
__device__ __forceinline__ CodeVec<V> pack_codes(const uint32_t (&q)[V]) {
  CodeVec<V> c;
  uint32_t w[V / 4];
#pragma unroll
  for (int k = 0; k < V / 4; ++k)
    w[k] = __byte_perm(__byte_perm(q[4 * k], q[4 * k + 1], 0x0040), __byte_perm(q[4 * k + 2], q[4 * k + 3], 0x0040),
                       0x5410);
  if constexpr (V == 4)
    c.raw = w[0];
  else
    c.raw = make_uint2(w[0], w[1]);
  return c;
}

// y[0..V) rounded to E4M3 (RN, saturating) and packed as V bytes (cvt: two per instruction).
template <int V>
__device__ __forceinline__ CodeVec<V> pack_e4m3(const float (&y)[V]) {
  CodeVec<V> c;
  uint32_t w[V / 4];
#pragma unroll
  for (int k = 0; k < V / 4; ++k) {
    const uint32_t lo = __nv_cvt_float2_to_fp8x2(make_float2(y[4 * k], y[4 * k + 1]), __NV_SATFINITE, __NV_E4M3);
    const uint32_t hi = __nv_cvt_float2_to_fp8x2(make_float2(y[4 * k + 2], y[4 * k + 3]), __NV_SATFINITE, __NV_E4M3);
    w[k] = lo | hi << 16;
  }
  if constexpr (V == 4)
    c.raw = w[0];
  else
    c.raw = make_uint2(w[0], w[1]);
  return c;
}

// What the per-element lookup needs: the compact table (C) or, failing that, the global LUT.
struct Lookup {
  const float* code;  // shared memory: code[q << 5] is code value q (this lane's replica)
  uint32_t ct;        // shared-window address of the compact table - 4 * kmin (byte address of key 0)
  qi::Compact c;
  const qi::Tables* gtab;
  qi::LutShape shape;
  // Multipliers of compact_lookup, runtime values so that ptxas keeps the products as IMADs:
  // a known power of two would become a shift or LEA on the ALU pipe.
  int32_t key_mul;
  uint32_t four, k256, one;
};

__device__ __forceinline__ Lookup make_lookup(uint32_t* smem, bool fake, const qi::Tables* gtab, const qi::Compact& c,
                                              const qi::LutShape& shape) {
  const uint32_t ct = static_cast<uint32_t>(__cvta_generic_to_shared(smem + (fake ? kRepFloats : 0)));
  const uint32_t one = c.entries > 0 ? 1u : 2u;  // 1 wherever compact_lookup runs
  return {reinterpret_cast<const float*>(smem) + (threadIdx.x & 31),
          ct - 4u * static_cast<uint32_t>(c.kmin),
          c,
          gtab,
          shape,
          (c.sh >= 2 && c.sh <= 23) ? 1 << (32 - c.sh) : 0,
          4 * one,
          256 * one,
          one};
}

// qi::compact_index with its integer work split between the ALU and FMA pipes (each takes a warp
// every other cycle; the quantize loops are bound by instruction issue). Clamp: x = max(x,
// code[0]) first (FMNMX); without it x must lie in [-(1 + 2^-23), 1 + 2^-23] (tiles free of NaN
// and Inf, c.noclamp). Then x * 2^-k rounded down (FFMA.RM), the ordered bits (SHF, LOP3),
// the key (mul.hi.s32 by 2^(32 - sh) is o >> sh) and address (IMAD), w = o * 256 (IMAD), and
// compact_step as a subtract that sets the carry and an IMAD.X that adds it (madc: e * 1 +
// 0xFFFFFFFF + carry): 9 instructions with the load, 3 of them on the ALU pipe. The load is
// volatile so that it stays after the barrier that publishes the table.
template <bool Clamp>
__device__ __forceinline__ uint32_t compact_lookup(const Lookup& L, float x) {
  const float xs = qi::scale_down(Clamp ? fmaxf(x, L.c.floor) : x, L.c.scale);  // NaN, x < code[0] -> code[0]
  const uint32_t o = static_cast<uint32_t>(qi::ordered(xs));
  uint32_t key, a, e, w, q;
  asm("mul.hi.s32 %0, %1, %2;" : "=r"(key) : "r"(o), "r"(L.key_mul));
  asm("mad.lo.u32 %0, %1, %2, %3;" : "=r"(a) : "r"(key), "r"(L.four), "r"(L.ct));
  asm volatile("ld.shared.u32 %0, [%1];" : "=r"(e) : "r"(a));
  asm("mul.lo.u32 %0, %1, %2;" : "=r"(w) : "r"(o), "r"(L.k256));
  asm("{\n\t.reg .u32 d;\n\tsub.cc.u32 d, %1, %2;\n\tmadc.lo.u32 %0, %2, %3, 0xFFFFFFFF;\n\t}"
      : "=r"(q)
      : "r"(w), "r"(e), "r"(L.one));
  return q;  // qi::compact_step(e, w)
}

template <bool C, bool Clamp = true>
__device__ __forceinline__ uint32_t lookup(const Lookup& L, float x) {
  if constexpr (C)
    return compact_lookup<Clamp>(L, x);
  else
    return static_cast<uint32_t>(
        qi::lut_index(reinterpret_cast<const qi::LutEntry*>(L.gtab + 1), L.shape, *L.gtab, x));
}

// Global path: the divisor's reciprocal and where the branch-free division is exact.
struct GlobalDiv {
  float y = 0, lim = 0;
  bool fast = false;
};

__device__ __forceinline__ GlobalDiv global_div(float gabs) {
  GlobalDiv d;
  d.fast = gabs >= 0x1p-100f && gabs <= 0x1p100f;  // false for 0, Inf, NaN
  if (d.fast) d.y = __frcp_rn(gabs), d.lim = fmaxf(0x1p-100f, __fmul_rn(gabs, 0x1p-125f));
  return d;
}

// max(a, b) with NaN propagating (max.NaN: one FMNMX.NAN).
__device__ __forceinline__ float fmax_nan(float a, float b) {
  float r;
  asm("max.NaN.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
}

// max |x| of 8 halves (f16 or bf16) as a float, on the raw bits: packed maxima with |.| (VHMNMX
// takes three operands), a quarter of the FMNMX a float per element costs. Nan: NaN propagates
// (a row with a NaN gives NaN); otherwise it is ignored, as by fmaxf (the chain starts at 0, so a
// row of NaNs gives 0).
template <class T, bool Nan>
__device__ __forceinline__ float row_absmax16(const uint4& r) {
  using T2 = std::conditional_t<std::is_same_v<T, __half>, __half2, __nv_bfloat162>;
  const uint32_t w[4] = {r.x, r.y, r.z, r.w};
  T2 m;
  memset(&m, 0, sizeof m);
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    T2 h;
    memcpy(&h, &w[k], sizeof h);
    m = Nan ? __hmax2_nan(m, __habs2(h)) : __hmax2(m, __habs2(h));
  }
  T half[2];
  memcpy(half, &m, sizeof half);
  return Nan ? fmax_nan(load_f32(half[0]), load_f32(half[1])) : fmaxf(load_f32(half[0]), load_f32(half[1]));
}

// Blockwise 16-bit full tiles: each row's max |x| from the raw vectors (quantize_tile's rm), and
// whether all the rows are free of NaN and Inf (a second chain with NaN propagating: branch-free,
// as a branch here would diverge before the block absmax's warp collectives).
template <class T, int B, int J>
__device__ __forceinline__ bool row_maxima(const uint4 (&r)[J], float (&rm)[J]) {
  bool finite = false;
  if constexpr (B > 0 && sizeof(T) == 2) {
    finite = true;
#pragma unroll
    for (int j = 0; j < J; ++j) {
      rm[j] = row_absmax16<T, false>(r[j]);
      finite &= row_absmax16<T, true>(r[j]) < INFINITY;
    }
  }
  return finite;
}

// One tile (thread's share: v[J][V] at base + j*32*V). Full: the whole tile is in range and
// every pointer 16-byte aligned (no checks). B > 0: blockwise; B == 0: global (gabs).
// Fake: writes code[q] * absmax in T to fake; otherwise the codes. F8 (with Fake): writes
// e4m3(code[q] * kE4M3Mul) bytes to codes instead of the fake values. rm, finite: with Full, B > 0 and
// a 16-bit T, each row's max |x| and whether no row holds NaN or Inf (row_maxima); unused
// otherwise. Finite rows take the lookups without the clamp.
template <class T, int B, bool Fake, bool F8, bool C, bool Full, int J, int V>
__device__ __forceinline__ void quantize_tile(const float* rm, bool finite, float (&v)[J][V], int64_t base, int it,
                                              int64_t n,
                                              bool aligned, const Lookup& L, float gabs, const GlobalDiv& gd,
                                              const Group& g, float* __restrict__ absmax,
                                              uint8_t* __restrict__ codes, T* __restrict__ fake) {
  float m[J];
  if constexpr (B > 0) {
#pragma unroll
    for (int j = 0; j < J; ++j) {
      if constexpr (Full && sizeof(T) == 2) {
        m[j] = rm[j];
      } else {
        m[j] = 0.0f;  // fmaxf ignores NaN
#pragma unroll
        for (int q = 0; q < V; ++q) m[j] = fmaxf(m[j], fabsf(v[j][q]));
      }
    }
    block_absmax<B, V, J>(m, g, it);
    constexpr int kRows = B / V / 32 > 1 ? (B / V / 32 < J ? B / V / 32 : J) : 1;  // rows sharing a block
    qi::Scale sc[J / kRows];
    bool unit = true;  // every scale s == 1 (absmax in [2^-126, 2^126)): x = v * r, one multiply
#pragma unroll
    for (int j = 0; j < J; j += kRows) {
      const int64_t e = base + j * 32 * V;
      if ((Full || e < n) && (e & (B - 1)) == 0) absmax[e / B] = m[j];
      sc[j / kRows] = qi::block_scale(m[j]);
      unit &= sc[j / kRows].s == 1.0f;
    }
    if (unit) {
#pragma unroll
      for (int j = 0; j < J; ++j)
#pragma unroll
        for (int q = 0; q < V; ++q) v[j][q] = __fmul_rn(v[j][q], sc[j / kRows].r);
    } else {
#pragma unroll
      for (int j = 0; j < J; ++j)
#pragma unroll
        for (int q = 0; q < V; ++q) v[j][q] = qi::block_x(v[j][q], sc[j / kRows]);
    }
  } else {
    // x = v / gabs without a branch per element: y = RN(1 / gabs), q0 = RN(v * y), then two
    // corrections q += RN(v - gabs * q) * y (the remainders are exact), which is RN(v / gabs)
    // while nothing underflows: gabs in [2^-100, 2^100], |v| >= max(2^-100, gabs * 2^-125) or
    // v == 0. A thread with any element outside that takes global_x (__fdiv_rn) for its tile.
    float x[J][V];
    bool slow = !gd.fast;
#pragma unroll
    for (int j = 0; j < J; ++j) {
      m[j] = gabs;
#pragma unroll
      for (int q = 0; q < V; ++q) {
        const float a = v[j][q], q0 = __fmul_rn(a, gd.y), q1 = __fmaf_rn(__fmaf_rn(-gabs, q0, a), gd.y, q0);
        x[j][q] = __fmaf_rn(__fmaf_rn(-gabs, q1, a), gd.y, q1);
        slow |= !(fabsf(a) >= gd.lim || a == 0.0f);
      }
    }
    if (slow) {
#pragma unroll
      for (int j = 0; j < J; ++j)
#pragma unroll
        for (int q = 0; q < V; ++q) v[j][q] = qi::global_x(v[j][q], gabs);
    } else {
#pragma unroll
      for (int j = 0; j < J; ++j)
#pragma unroll
        for (int q = 0; q < V; ++q) v[j][q] = x[j][q];
    }
  }
  auto emit = [&](auto clamp_tag) {
    constexpr bool Clamp = decltype(clamp_tag)::value;
#pragma unroll
    for (int j = 0; j < J; ++j) {
      const int64_t e = base + j * 32 * V;
      uint32_t q[V];
#pragma unroll
      for (int k = 0; k < V; ++k) q[k] = lookup<C, Clamp>(L, v[j][k]);
      if constexpr (Fake) {
        float y[V];
#pragma unroll
        for (int k = 0; k < V; ++k) y[k] = __fmul_rn(L.code[(q[k] & 0xFF) << 5], F8 ? kE4M3Mul : m[j]);
        if constexpr (F8)
          store_codes<V>(codes, e, Full ? INT64_MAX : n, Full || aligned, pack_e4m3<V>(y));
        else
          store_vec<T, V>(fake, e, Full ? INT64_MAX : n, Full || aligned, y);
      } else {
        store_codes<V>(codes, e, Full ? INT64_MAX : n, Full || aligned, pack_codes<V>(q));
      }
    }
  };
  // Blockwise x of finite v lies in [-(1 + 2^-23), 1 + 2^-23]: no clamp needed (Compact). f32
  // tiles keep the clamp: their kernel is bound by memory, and its row maxima are float FMNMX,
  // where a NaN test would cost an instruction per element.
  if constexpr (C && Full && B > 0 && sizeof(T) == 2) {
    if (finite && L.c.noclamp) return emit(std::false_type{});
  }
  emit(std::true_type{});
}

template <class T, int J, int V>
__device__ __forceinline__ void load_tile(uint4 (&r)[J], const T* __restrict__ A, int64_t e) {
#pragma unroll
  for (int j = 0; j < J; ++j) r[j] = __ldcs(reinterpret_cast<const uint4*>(A + e + j * 32 * V));  // read once
}

template <class T, int J, int V>
__device__ __forceinline__ void unpack_tile(const uint4 (&r)[J], float (&v)[J][V]) {
#pragma unroll
  for (int j = 0; j < J; ++j) unpack<T, V>(r[j], v[j]);
}

// Global path: max of the absmax kernel's per-block partials (float bits, NaN canonical), in
// every thread; block 0 writes it to *absmax. Contains the barrier that publishes load_index.
__device__ __forceinline__ float global_absmax(const unsigned* __restrict__ partial, int parts, float* absmax,
                                               unsigned* red) {
  unsigned m = 0;
  for (int i = threadIdx.x; i < parts; i += blockDim.x) m = max(m, __ldg(partial + i));
  m = __reduce_max_sync(kFull, m);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = m;
  __syncthreads();
  m = red[0];
  for (int w = 1; w < static_cast<int>(blockDim.x / 32); ++w) m = max(m, red[w]);
  if (blockIdx.x == 0 && threadIdx.x == 0) *absmax = __uint_as_float(m);
  return __uint_as_float(m);
}

// The side job's state (quantize_kernel): this group's next side tile k counts from the end
// (tile index full - 1 - k), J vectors per thread in flight between load() and add().
template <class T>
struct SideWalk {
  static constexpr int V = vec_width<T>(), J = kPerThread / V;
  SideMax<T> s;
  Group g;
  int64_t full = 0, k = 0;
  bool pending = false;
  uint4 r[J];
  VecAbsMax<T> m;
  __device__ __forceinline__ SideWalk(const SideMax<T>& side, bool on, const Group& grp)
      : s(side), g(grp), k(grp.index) {
    full = on && side.aligned ? side.n / kTile : 0;
  }
  __device__ __forceinline__ void load(int64_t off) {
    pending = k < full;
    if (pending) {
      const T* base = s.x + (full - 1 - k) * kTile + off;
#pragma unroll
      for (int j = 0; j < J; ++j) r[j] = __ldg(reinterpret_cast<const uint4*>(base + j * 32 * V));
    }
  }
  __device__ __forceinline__ void add() {
    if (!pending) return;
#pragma unroll
    for (int j = 0; j < J; ++j) m.add(r[j]);
    k += g.count;
  }
  // The full tiles left, then the partial tile (every element when unaligned), then the group's
  // max into s.partial[g.index]; red: kThreads / 32 words of the group's shared memory free to
  // reuse.
  __device__ __forceinline__ void finish(int64_t off, unsigned* red) {
    while (k < full) {  // add() advances k
      load(off);
      add();
    }
    uint32_t b = m.ordered_bits();
    const int64_t stride = g.count * kThreads;
    for (int64_t i = full * kTile + g.index * kThreads + g.tid; i < s.n; i += stride) b = max(b, abs_bits(s.x[i]));
    b = __reduce_max_sync(kFull, b);
    g.sync();  // the last tile's reads of warp_max are done
    if ((threadIdx.x & 31) == 0) red[g.tid >> 5] = b;
    g.sync();
    if (g.tid == 0) {
      for (int w = 1; w < kThreads / 32; ++w) b = max(b, red[w]);
      s.partial[g.index] = b;
    }
  }
};

// B > 0: blockwise (absmax per block, written to absmax); B == 0: global (the absmax kernel's
// `parts` partials reduced here; block 0 writes the result to *absmax). Fake: writes
// code[q] * absmax in T to fake (codes unused); otherwise the codes. F8 (with Fake): the bytes
// e4m3(code[q] * kE4M3Mul) to codes (fake unused). Full aligned tiles first,
// D of them in flight per thread (the tile D ahead is loaded before this one is computed; the first loads
// are issued before the tables are set up), then the partial tile (or, for unaligned pointers,
// every tile) through the checked path.
// Side job (blockwise fake only; side.x null: none): max |x| of another tensor of T into
// side.partial[group index] (the amax-hint format, for quantize_global), its full tiles walked
// from the end (L2-cached loads, as absmax_kernel) one per full A tile, loaded before that
// tile's lookups so the loads overlap them; the rest after the A tiles.
// NG groups of 256 threads per CUDA block. Blockwise f16/bf16 codes kernels: NG = 4, one block
// per SM (32 warps, at most 64 registers, one copy of the tables per SM; the checked path of
// blocksizes 32..256 spills a few registers); measured on an H200 against three blocks of 256 per
// SM: f16 codes 4 % faster, f32 codes 1-3 % slower. f32 codes, fake and global kernels: NG = 1,
// three blocks per SM (at most 80 registers: with 64 the fake kernels' side job and the global
// kernels' loop spill).
template <class T, int B, int D, bool Fake, bool F8, int NG>
__global__ void __launch_bounds__(NG * kThreads, NG == 1 ? 3 : 1)
    quantize_kernel(const T* __restrict__ A, int64_t n, const qi::Tables* __restrict__ gtab, qi::LutShape shape,
                    qi::Compact c, int32_t compact_offset, const unsigned* __restrict__ partial, int parts,
                    float* __restrict__ absmax, uint8_t* __restrict__ codes, T* __restrict__ fake, bool aligned,
                    SideMax<T> side) {
  extern __shared__ uint32_t smem[];
  __shared__ float warp_max[NG][2 * kThreads / 32];
  const Group g = make_group<NG>(warp_max);
  constexpr int V = vec_width<T>(), J = kPerThread / V;
  const int lane = threadIdx.x & 31, warp = g.tid >> 5;
  const int64_t off = warp * kWarpTile + lane * V;
  const int64_t full = aligned ? n / kTile : 0, tiles = (n + kTile - 1) / kTile, G = g.count;
  int64_t tile = g.index;
  uint4 X[J], Y[J];
  if (tile < full) load_tile<T, J, V>(X, A, tile * kTile + off);
  if (D == 2 && tile + G < full) load_tile<T, J, V>(Y, A, (tile + G) * kTile + off);
  load_index(smem, Fake, gtab, c, compact_offset);
  float gabs = 0.0f;
  if constexpr (B == 0)
    gabs = global_absmax(partial, parts, absmax, reinterpret_cast<unsigned*>(&warp_max[0][0]));
  else
    __syncthreads();
  const GlobalDiv gd = B == 0 ? global_div(gabs) : GlobalDiv{};
  const Lookup L = make_lookup(smem, Fake, gtab, c, shape);
  constexpr bool kSide = Fake && B > 0;
  SideWalk<T> sw(side, kSide && side.x != nullptr, g);
  auto walk = [&](auto compact) {
    constexpr bool Cm = decltype(compact)::value;
    int it = 0;  // this group's tile count (parity for block_absmax)
    while (tile < full) {
      {
        float v[J][V];
        unpack_tile<T, J, V>(X, v);
        float rm[J];
        const bool finite = row_maxima<T, B, J>(X, rm);
        if (tile + D * G < full) load_tile<T, J, V>(X, A, (tile + D * G) * kTile + off);
        if constexpr (kSide) sw.load(off);
        quantize_tile<T, B, Fake, F8, Cm, true, J, V>(rm, finite, v, tile * kTile + off, it, n, true, L, gabs, gd, g,
                                                      absmax, codes, fake);
        if constexpr (kSide) sw.add();
        tile += G, ++it;
      }
      if constexpr (D == 2) {
        if (tile >= full) break;
        float v[J][V];
        unpack_tile<T, J, V>(Y, v);
        float rm[J];
        const bool finite = row_maxima<T, B, J>(Y, rm);
        if (tile + 2 * G < full) load_tile<T, J, V>(Y, A, (tile + 2 * G) * kTile + off);
        if constexpr (kSide) sw.load(off);
        quantize_tile<T, B, Fake, F8, Cm, true, J, V>(rm, finite, v, tile * kTile + off, it, n, true, L, gabs, gd, g,
                                                      absmax, codes, fake);
        if constexpr (kSide) sw.add();
        tile += G, ++it;
      }
    }
    for (; tile < tiles; tile += G, ++it) {
      const int64_t base = tile * kTile + off;
      float v[J][V];
#pragma unroll
      for (int j = 0; j < J; ++j) load_vec<T, V>(A, base + j * 32 * V, n, aligned, v[j]);
      quantize_tile<T, B, Fake, F8, Cm, false, J, V>(nullptr, false, v, base, it, n, aligned, L, gabs, gd, g, absmax,
                                                     codes, fake);
    }
  };
  if (c.entries > 0)
    walk(std::true_type{});
  else
    walk(std::false_type{});
  if constexpr (kSide)
    if (side.x) sw.finish(off, reinterpret_cast<unsigned*>(g.warp_max));
}

// Max of |A| as float bits (NaN canonical, above Inf) per CUDA block into partial[blockIdx.x]
// (no initialization needed, max is order-free: deterministic). Tiles are walked from the end
// with L2-cached loads, so the start of a tensor larger than L2 is still there when the
// quantize pass (from the start, reading each element again) comes.
template <class T>
__global__ void __launch_bounds__(kThreads)
    absmax_kernel(const T* __restrict__ A, int64_t n, unsigned* __restrict__ partial, bool aligned) {
  constexpr int V = vec_width<T>(), J = kPerThread / V;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  unsigned m = 0;
  const int64_t tiles = (n + kTile - 1) / kTile;
  for (int64_t k = blockIdx.x; k < tiles; k += gridDim.x) {
    const int64_t base = (tiles - 1 - k) * kTile + warp * kWarpTile + lane * V;
    float v[J][V];
#pragma unroll
    for (int j = 0; j < J; ++j) load_vec<T, V, false>(A, base + j * 32 * V, n, aligned, v[j]);
#pragma unroll
    for (int j = 0; j < J; ++j)
#pragma unroll
      for (int q = 0; q < V; ++q) m = max(m, __float_as_uint(v[j][q]) & 0x7FFFFFFFu);
  }
  if (m > 0x7F800000u) m = 0x7FC00000u;
  m = __reduce_max_sync(kFull, m);
  __shared__ unsigned wm[kThreads / 32];
  if (lane == 0) wm[warp] = m;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kThreads / 32; ++w) m = max(m, wm[w]);
    partial[blockIdx.x] = m;
  }
}

// Global quantization of a 16-bit tensor as a table lookup. With one absmax for the whole
// tensor, an element's code (and its fake value) depends on its 16 bits alone, so
// table16_kernel evaluates all 65536 bit patterns once, with the arithmetic of the CPU reference
// (x = v / absmax by qi::global_x, index by qi::closed_form, which the kernels' lookups equal),
// and table16_map_kernel maps every element through the table in shared memory: one 2-byte
// (fake) or 1-byte (code) shared load per element instead of a division and an index search.
constexpr int kPatterns = 65536;
constexpr int kMapThreads = 1024;  // one block per SM: the fake table takes 128 KiB
constexpr int kMapJ = 2;           // 16-byte vectors per thread and step

template <class T>
__device__ __forceinline__ T from_bits16(uint16_t p) {
  if constexpr (std::is_same_v<T, __half>)
    return __ushort_as_half(p);
  else
    return __ushort_as_bfloat16(p);
}

template <class T>
__device__ __forceinline__ uint16_t to_bits16(T v) {
  if constexpr (std::is_same_v<T, __half>)
    return __half_as_ushort(v);
  else
    return __bfloat16_as_ushort(v);
}

// Grid: kPatterns / kThreads blocks. The absmax from the partials (block 0 writes *absmax).
// F8 (bytes): e4m3(code[q] * kE4M3Mul) instead of the code q, and scale[0..scale_n) = absmax /
// scale_div (the per-column scales of the tensor-core FP8 GEMM).
template <class T, bool Fake, bool F8 = false>
__global__ void __launch_bounds__(kThreads) table16_kernel(const qi::Tables* __restrict__ gtab,
                                                           const unsigned* __restrict__ partial, int parts,
                                                           float* __restrict__ absmax, void* __restrict__ table,
                                                           float* __restrict__ scale = nullptr, int64_t scale_n = 0,
                                                           float scale_div = 1.0f) {
  __shared__ unsigned red[kThreads / 32];
  const float gabs = global_absmax(partial, parts, absmax, red);
  const unsigned p = blockIdx.x * kThreads + threadIdx.x;
  const int q = qi::closed_form(gtab->code, gtab->mid, qi::global_x(load_f32(from_bits16<T>(p)), gabs));
  if constexpr (Fake) {
    static_cast<uint16_t*>(table)[p] = to_bits16(store_f32<T>(__fmul_rn(gtab->code[q], gabs)));
  } else if constexpr (F8) {
    static_cast<uint8_t*>(table)[p] =
        __nv_cvt_float_to_fp8(__fmul_rn(gtab->code[q], kE4M3Mul), __NV_SATFINITE, __NV_E4M3);
    for (int64_t i = p; i < scale_n; i += kPatterns) scale[i] = __fdiv_rn(gabs, scale_div);
  } else {
    static_cast<uint8_t*>(table)[p] = static_cast<uint8_t>(q);
  }
}

// out[i] = table[A[i]] (A and a fake out as 16-bit patterns; codes as bytes). Aligned: steps of
// kMapJ 16-byte vectors per thread, the next step's loads issued before this one's lookups; the
// rest (a tail of fewer than 8 elements, or everything when a pointer is unaligned) one by one.
template <bool Fake>
__global__ void __launch_bounds__(kMapThreads, 1)
    table16_map_kernel(const uint16_t* __restrict__ A, int64_t n, const uint4* __restrict__ table,
                       uint8_t* __restrict__ codes, uint16_t* __restrict__ fake, bool aligned) {
  extern __shared__ uint4 tab4[];
  const int64_t vecs = aligned ? n / 8 : 0, stride = int64_t{gridDim.x} * kMapThreads;
  int64_t v = blockIdx.x * int64_t{kMapThreads} + threadIdx.x;  // this thread's first vector
  const uint4* A4 = reinterpret_cast<const uint4*>(A);
  uint4 x[kMapJ];
#pragma unroll
  for (int j = 0; j < kMapJ; ++j)
    if (v + j * stride < vecs) x[j] = __ldcs(A4 + v + j * stride);
  for (int i = threadIdx.x; i < kPatterns * (Fake ? 2 : 1) / 16; i += kMapThreads) tab4[i] = __ldg(table + i);
  __syncthreads();
  const uint16_t* tab16 = reinterpret_cast<const uint16_t*>(tab4);
  const uint8_t* tab8 = reinterpret_cast<const uint8_t*>(tab4);
  for (; v < vecs; v += kMapJ * stride) {
    uint4 y[kMapJ];
#pragma unroll
    for (int j = 0; j < kMapJ; ++j) y[j] = x[j];
#pragma unroll
    for (int j = 0; j < kMapJ; ++j)
      if (v + (kMapJ + j) * stride < vecs) x[j] = __ldcs(A4 + v + (kMapJ + j) * stride);
#pragma unroll
    for (int j = 0; j < kMapJ; ++j) {
      const int64_t e = v + j * stride;
      if (e >= vecs) break;
      const uint32_t w[4] = {y[j].x, y[j].y, y[j].z, y[j].w};
      if constexpr (Fake) {
        uint32_t o[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) o[k] = __byte_perm(tab16[w[k] & 0xFFFFu], tab16[w[k] >> 16], 0x5410);
        reinterpret_cast<uint4*>(fake)[e] = make_uint4(o[0], o[1], o[2], o[3]);
      } else {
        uint32_t o[2];
#pragma unroll
        for (int k = 0; k < 2; ++k)
          o[k] = __byte_perm(__byte_perm(tab8[w[2 * k] & 0xFFFFu], tab8[w[2 * k] >> 16], 0x0040),
                             __byte_perm(tab8[w[2 * k + 1] & 0xFFFFu], tab8[w[2 * k + 1] >> 16], 0x0040), 0x5410);
        reinterpret_cast<uint2*>(codes)[e] = make_uint2(o[0], o[1]);
      }
    }
  }
  for (int64_t i = vecs * 8 + blockIdx.x * int64_t{kMapThreads} + threadIdx.x; i < n; i += stride) {
    const uint16_t a = A[i];
    if constexpr (Fake)
      fake[i] = tab16[a];
    else
      codes[i] = tab8[a];
  }
}

// out (cols, rows) bytes = table[A] transposed, A (rows, cols) 16-bit row-major: the tensor-core
// FP8 GEMM wants its operands K-major, and a (K, N) B is not. Tiles of kTRows x kTCols, walked by
// a persistent grid (the table is loaded once per CUDA block). A thread loads kTRowsPerThread rows
// of 8 columns (16-byte vectors), maps them and writes each column's 4 bytes as one word into the
// transposed tile in shared memory (row stride kTRows / 4 + 1 words: the reads are free of bank
// conflicts, the writes 2-way); then
// the tile leaves as 16-byte vectors of output rows. Requires rows % 16 == 0, cols % 8 == 0 and
// 16-byte aligned pointers (the caller's conditions for the FP8 GEMM).
constexpr int kTThreads = 256, kTCols = 64, kTRowsPerThread = 4;
constexpr int kTRows = kTRowsPerThread * kTThreads / (kTCols / 8);  // 128
constexpr int kTStride = kTRows / 4 + 1;                            // words per transposed row

__global__ void __launch_bounds__(kTThreads)
    table16_map_t_kernel(const uint16_t* __restrict__ A, int64_t rows, int64_t cols, const uint4* __restrict__ table,
                         uint8_t* __restrict__ out) {
  extern __shared__ uint4 tab4[];
  uint32_t* tile = reinterpret_cast<uint32_t*>(tab4 + kPatterns / 16);  // kTCols x kTStride words
  for (int i = threadIdx.x; i < kPatterns / 16; i += kTThreads) tab4[i] = __ldg(table + i);
  __syncthreads();
  const uint8_t* tab8 = reinterpret_cast<const uint8_t*>(tab4);
  const int64_t row_tiles = (rows + kTRows - 1) / kTRows, col_tiles = (cols + kTCols - 1) / kTCols;
  const int c8 = threadIdx.x % (kTCols / 8), r4 = threadIdx.x / (kTCols / 8);  // column vector, row quad
  for (int64_t t = blockIdx.x; t < row_tiles * col_tiles; t += gridDim.x) {
    const int64_t r0 = t / col_tiles * kTRows, c0 = t % col_tiles * kTCols;
    const int64_t col = c0 + c8 * 8;
    uint4 x[kTRowsPerThread];
#pragma unroll
    for (int k = 0; k < kTRowsPerThread; ++k) {
      const int64_t r = r0 + r4 * kTRowsPerThread + k;
      x[k] = r < rows && col < cols ? __ldcs(reinterpret_cast<const uint4*>(A + r * cols + col))
                                    : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int q = 0; q < 8; ++q) {
      uint32_t w = 0;
#pragma unroll
      for (int k = 0; k < kTRowsPerThread; ++k) {
        const uint32_t v[4] = {x[k].x, x[k].y, x[k].z, x[k].w};
        const uint32_t bits = (v[q / 2] >> (16 * (q % 2))) & 0xFFFFu;
        w |= uint32_t{tab8[bits]} << (8 * k);
      }
      tile[(c8 * 8 + q) * kTStride + r4] = w;
    }
    __syncthreads();
    constexpr int kVecs = kTCols * kTRows / 16;  // 16-byte vectors of the transposed tile
#pragma unroll
    for (int i = threadIdx.x; i < kVecs; i += kTThreads) {
      const int oc = i / (kTRows / 16), chunk = i % (kTRows / 16);
      const int64_t orow = c0 + oc, ocol = r0 + chunk * 16;
      const uint32_t* src = tile + oc * kTStride + chunk * 4;
      if (orow < cols && ocol < rows)
        *reinterpret_cast<uint4*>(out + orow * rows + ocol) = make_uint4(src[0], src[1], src[2], src[3]);
    }
    __syncthreads();
  }
}

template <class To, int V, bool Full>
__device__ __forceinline__ void dequantize_vec(const CodeVec<V>& c, float am, const float* tab, const float* offset,
                                               float off, To* __restrict__ out, int64_t e, int64_t n, bool aligned) {
  float y[V];
#pragma unroll
  for (int q = 0; q < V; ++q) {
    y[q] = __fmul_rn(tab[c.c[q]], am);
    if (offset) y[q] = __fadd_rn(y[q], off);
  }
  store_vec<To, V>(out, e, Full ? INT64_MAX : n, Full || aligned, y);
}

// A grid of one CUDA block per tile (the launcher caps it at 2^31 - 1; the loop covers the rest):
// the block scheduler keeps every SM busy to the end, where a persistent grid (64M elements:
// 15.5 tiles per block) left half of them idle in the last round (6 % slower on an H200).
template <class To>
__global__ void __launch_bounds__(kThreads)
    dequantize_kernel(const uint8_t* __restrict__ codes, int64_t n, const float* __restrict__ code,
                      const float* __restrict__ absmax, int log2b, const float* __restrict__ offset,
                      To* __restrict__ out, bool aligned) {
  __shared__ float tab[256];
  tab[threadIdx.x] = code[threadIdx.x];
  __syncthreads();
  const float off = offset ? *offset : 0.0f;
  constexpr int V = vec_width<To>(), J = kPerThread / V;
  using Raw = decltype(CodeVec<V>::raw);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t lo = warp * kWarpTile + lane * V;
  const int64_t full = aligned ? n / kTile : 0, tiles = (n + kTile - 1) / kTile;
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    if (tile < full) {
      CodeVec<V> c[J];
      float am[J];
#pragma unroll
      for (int j = 0; j < J; ++j) {
        const int64_t e = tile * kTile + lo + j * 32 * V;  // a vector never straddles blocks
        c[j].raw = __ldcs(reinterpret_cast<const Raw*>(codes + e));
        am[j] = __ldg(absmax + (e >> log2b));
      }
#pragma unroll
      for (int j = 0; j < J; ++j)
        dequantize_vec<To, V, true>(c[j], am[j], tab, offset, off, out, tile * kTile + lo + j * 32 * V, n, true);
    } else {
#pragma unroll
      for (int j = 0; j < J; ++j) {
        const int64_t e = tile * kTile + lo + j * 32 * V;
        dequantize_vec<To, V, false>(load_codes<V>(codes, e, n, aligned), e < n ? __ldg(absmax + (e >> log2b)) : 0.0f,
                                     tab, offset, off, out, e, n, aligned);
      }
    }
  }
}

// Sums of 1024-element chunks: lane t adds x[t], x[t+256], x[t+512], x[t+768], then a halving
// tree (the order cpu::mean_tree reproduces).
template <class T>
__global__ void __launch_bounds__(256) chunk_sum_kernel(const T* __restrict__ x, int64_t n, double* out) {
  __shared__ double p[256];
  const int t = threadIdx.x;
  const int64_t chunks = (n + 1023) / 1024;
  for (int64_t c = blockIdx.x; c < chunks; c += gridDim.x) {
    double s = 0.0;
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int64_t i = c * 1024 + r * 256 + t;
      if (i < n) s = __dadd_rn(s, static_cast<double>(x[i]));
    }
    p[t] = s;
    __syncthreads();
    for (int st = 128; st > 0; st >>= 1) {
      if (t < st) p[t] = __dadd_rn(p[t], p[t + st]);
      __syncthreads();
    }
    if (t == 0) out[c] = p[0];
    __syncthreads();
  }
}

__global__ void finish_mean_kernel(const double* sum, int64_t n, float* out) {
  *out = static_cast<float>(__ddiv_rn(*sum, static_cast<double>(n)));
}

__global__ void sub_offset_kernel(const float* __restrict__ x, int64_t n, const float* __restrict__ offset,
                                  float* out) {
  const float off = *offset;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = __fsub_rn(x[i], off);
}

// Checks the kernels' lookup (the compact table, or lut_index when it does not build) against
// closed_form on every float bit pattern in its domain: all of them for lut_index; for the compact
// table x <= hi and NaN with the clamp (every x the quantize kernels compute), and |x| <= 1 +
// 2^-23 without it (the x of finite blockwise tiles) when the table allows that.
__global__ void index_check_kernel(const qi::Tables* __restrict__ gtab, qi::LutShape shape, qi::Compact c,
                                   int32_t compact_offset, unsigned long long* bad) {
  extern __shared__ uint32_t smem[];
  const Lookup L = make_lookup(smem, false, gtab, c, shape);
  load_index(smem, false, gtab, c, compact_offset);
  __syncthreads();
  const bool compact = c.entries > 0;
  unsigned long long local = 0;
  const uint64_t stride = uint64_t(gridDim.x) * blockDim.x;
  for (uint64_t i = blockIdx.x * uint64_t(blockDim.x) + threadIdx.x; i < (uint64_t{1} << 32); i += stride) {
    const float x = __uint_as_float(static_cast<uint32_t>(i));
    const uint32_t want = static_cast<uint32_t>(qi::closed_form(gtab->code, gtab->mid, x));
    if (!compact) {
      local += (lookup<false>(L, x) & 0xFFu) != want;
      continue;
    }
    if (!(x > c.hi)) local += (lookup<true, true>(L, x) & 0xFFu) != want;
    if (c.noclamp && fabsf(x) <= qi::kMaxKernelX) local += (lookup<true, false>(L, x) & 0xFFu) != want;
  }
  atomicAdd(bad, local);
}

// Grid of a persistent kernel: SMs x resident blocks, at most `tiles` (the occupancy query is
// made once per kernel, shared memory size and device).
template <class K>
unsigned persistent_grid(K kernel, size_t smem, int64_t tiles, int threads = kThreads) {
  struct Seen {
    const void* kernel;
    size_t smem;
    int dev, blocks;
  };
  static std::mutex mutex;
  static std::vector<Seen> seen;
  int dev = 0;
  OCTET_CUDA_CHECK(cudaGetDevice(&dev));
  int blocks = 0;
  {
    std::lock_guard lock(mutex);
    for (const Seen& e : seen)
      if (e.kernel == reinterpret_cast<const void*>(kernel) && e.smem == smem && e.dev == dev) blocks = e.blocks;
  }
  if (blocks == 0) {
    int sms = 0, per_sm = 0;
    OCTET_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    OCTET_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
    blocks = sms * std::max(per_sm, 1);
    std::lock_guard lock(mutex);
    seen.push_back({reinterpret_cast<const void*>(kernel), smem, dev, blocks});
  }
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(tiles, blocks)));
}

// Dynamic shared memory of a kernel using load_index (the opt-in above 48 KiB set when needed).
template <class K>
size_t index_smem(K kernel, const qi::Compact& c, bool fake) {
  const size_t bytes = rep_bytes(fake) + 16 * static_cast<size_t>((c.entries + 3) / 4);
  if (bytes > 48 * 1024)
    OCTET_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(rep_bytes(true) + 4 * qi::kMaxCompact)));
  return bytes;
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// f32/f16/bf16 only (validated by src/quant.cpp).
template <class F>
void visit_quant(DType t, F&& f) {
  switch (t) {
    case DType::f32:
      return f(type_tag<float>{});
    case DType::f16:
      return f(type_tag<__half>{});
    case DType::bf16:
      return f(type_tag<__nv_bfloat16>{});
    default:
      fail("quant kernels", cat("dtype ", dtype_name(t), " is not supported"));
  }
}

// Full tiles in flight per thread: 1 for f32 (4 x 16 bytes), 2 for f16/bf16 (the same bytes
// in flight). Measured on an H200: 2 tiles for f32 spill registers and lose 3-8 %.
// The kernel writes codes or fake outputs, not both (the library never asks for both on CUDA:
// fake-quantize writes no codes); given both, the codes pass runs first, then the fake pass.
// f8: (Fake, codes given, fake null) the e4m3 bytes of the fake values / absmax * kE4M3Mul.
template <class T, int B>
void launch_quantize(const T* A, int64_t n, const QuantIndex& q, const unsigned* partial, int parts, float* absmax,
                     uint8_t* codes, T* fake, cudaStream_t s, SideAbsmax* side = nullptr, bool f8 = false) {
  constexpr int D = sizeof(T) == 4 ? 1 : 2;
  auto launch = [&](auto fake_tag, auto f8_tag) {
    constexpr bool Fake = decltype(fake_tag)::value, F8 = decltype(f8_tag)::value;
    constexpr int NG = Fake || B == 0 || sizeof(T) == 4 ? 1 : 4;  // see quantize_kernel
    const auto kernel = quantize_kernel<T, B, D, Fake, F8, NG>;
    const size_t smem = index_smem(kernel, q.compact, Fake);
    const bool aligned = aligned16(A) && (Fake && !F8 ? aligned16(fake) : aligned16(codes));
    SideMax<T> sm;
    int64_t tiles = (n + kTile - 1) / kTile;
    if (Fake && side && side->n > 0) {
      sm = {static_cast<const T*>(side->x), side->n, side->partial, aligned16(side->x)};
      tiles = std::max(tiles, (side->n + kTile - 1) / kTile);
    }
    const unsigned grid = persistent_grid(kernel, smem, (tiles + NG - 1) / NG, NG * kThreads);
    if (sm.x) side->parts = static_cast<int>(grid) * NG;
    kernel<<<grid, NG * kThreads, smem, s>>>(A, n, static_cast<const qi::Tables*>(q.data), q.shape, q.compact,
                                        q.compact_offset, partial, parts, absmax, codes, fake, aligned, sm);
    OCTET_LAUNCH_CHECK("quantize_kernel");
  };
  if constexpr (B > 0 && sizeof(T) == 2) {
    if (f8) return launch(std::true_type{}, std::true_type{});
  }
  if (codes) launch(std::false_type{}, std::false_type{});
  if (fake) launch(std::true_type{}, std::false_type{});
}

// The table path of quantize_global for 16-bit T (kTable16MinNumel elements or more): per output
// kind, the table from the partials, then the map pass.
template <class T>
void table16_quantize(const T* A, int64_t n, const QuantIndex& q, const unsigned* partial, int parts, float* absmax,
                      uint8_t* codes, T* fake, cudaStream_t s) {
  auto pass = [&](auto fake_tag) {
    constexpr bool Fake = decltype(fake_tag)::value;
    constexpr size_t bytes = kPatterns * (Fake ? 2 : 1);
    void* table = nullptr;
    OCTET_CUDA_CHECK(cudaMallocAsync(&table, bytes, s));
    table16_kernel<T, Fake><<<kPatterns / kThreads, kThreads, 0, s>>>(static_cast<const qi::Tables*>(q.data), partial,
                                                                      parts, absmax, table);
    OCTET_LAUNCH_CHECK("table16_kernel");
    const auto kernel = table16_map_kernel<Fake>;
    OCTET_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
    const bool aligned = aligned16(A) && (Fake ? aligned16(fake) : aligned16(codes));
    const unsigned grid = persistent_grid(kernel, bytes, (n + kMapThreads * 8 - 1) / (kMapThreads * 8), kMapThreads);
    kernel<<<grid, kMapThreads, bytes, s>>>(reinterpret_cast<const uint16_t*>(A), n, static_cast<const uint4*>(table),
                                            codes, reinterpret_cast<uint16_t*>(fake), aligned);
    OCTET_LAUNCH_CHECK("table16_map_kernel");
    OCTET_CUDA_CHECK(cudaFreeAsync(table, s));
  };
  if (codes) pass(std::false_type{});
  if (fake) pass(std::true_type{});
}

// out[c * rows + i] = absmax[i * per_row + c / chunks] (per_row blocks a row, chunks of 128 a block).
__global__ void expand_block_scales_kernel(const float* __restrict__ absmax, int64_t rows, int64_t per_row,
                                           int64_t chunks, int64_t n, float* __restrict__ out) {
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < n; e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t c = e / rows, i = e % rows;
    out[e] = absmax[i * per_row + c / chunks];
  }
}

// finish(partial, parts) with the hint's partials of max |A| when given, otherwise with those of
// an absmax pass over A (a temporary buffer).
template <class T, class F>
void with_absmax_partials(const T* A, int64_t n, const uint32_t* hint, int hint_parts, cudaStream_t s, F&& finish) {
  if (hint) return finish(hint, hint_parts);
  const auto kernel = absmax_kernel<T>;
  const unsigned parts = persistent_grid(kernel, 0, (n + kTile - 1) / kTile);
  unsigned* partial = nullptr;
  OCTET_CUDA_CHECK(cudaMallocAsync(&partial, sizeof(unsigned) * parts, s));
  kernel<<<parts, kThreads, 0, s>>>(A, n, partial, aligned16(A));
  OCTET_LAUNCH_CHECK("absmax_kernel");
  finish(partial, static_cast<int>(parts));
  OCTET_CUDA_CHECK(cudaFreeAsync(partial, s));
}

// quantize_global_e4m3 after the absmax: the byte table, then the plain or the transposed map.
template <class T>
void table16_e4m3(const T* A, int64_t rows, int64_t cols, bool transpose, const QuantIndex& q,
                  const unsigned* partial, int parts, float* absmax, uint8_t* out, float* scale, int64_t scale_n,
                  float scale_div, cudaStream_t s) {
  void* table = nullptr;
  OCTET_CUDA_CHECK(cudaMallocAsync(&table, kPatterns, s));
  table16_kernel<T, false, true><<<kPatterns / kThreads, kThreads, 0, s>>>(
      static_cast<const qi::Tables*>(q.data), partial, parts, absmax, table, scale, scale_n, scale_div);
  OCTET_LAUNCH_CHECK("table16_kernel");
  const int64_t n = rows * cols;
  if (!transpose) {
    const auto kernel = table16_map_kernel<false>;
    OCTET_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kPatterns));
    const unsigned grid =
        persistent_grid(kernel, kPatterns, (n + kMapThreads * 8 - 1) / (kMapThreads * 8), kMapThreads);
    kernel<<<grid, kMapThreads, kPatterns, s>>>(reinterpret_cast<const uint16_t*>(A), n,
                                                static_cast<const uint4*>(table), out, nullptr,
                                                aligned16(A) && aligned16(out));
    OCTET_LAUNCH_CHECK("table16_map_kernel");
  } else {
    const auto kernel = table16_map_t_kernel;
    const size_t smem = kPatterns + sizeof(uint32_t) * kTCols * kTStride;
    OCTET_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    const int64_t tiles = (rows + kTRows - 1) / kTRows * ((cols + kTCols - 1) / kTCols);
    const unsigned grid = persistent_grid(kernel, smem, tiles, kTThreads);
    kernel<<<grid, kTThreads, smem, s>>>(reinterpret_cast<const uint16_t*>(A), rows, cols,
                                         static_cast<const uint4*>(table), out);
    OCTET_LAUNCH_CHECK("table16_map_t_kernel");
  }
  OCTET_CUDA_CHECK(cudaFreeAsync(table, s));
}

}  // namespace

void quantize_blockwise_e4m3(DType t, const void* A, int64_t n, const QuantIndex& q, int64_t blocksize,
                             float* absmax, uint8_t* out, cudaStream_t s, SideAbsmax* side) {
  if (side) side->parts = 0;
  if (n == 0) return;
  auto go = [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* a = static_cast<const T*>(A);
    switch (blocksize) {
      case 32: return launch_quantize<T, 32>(a, n, q, nullptr, 0, absmax, out, nullptr, s, side, true);
      case 64: return launch_quantize<T, 64>(a, n, q, nullptr, 0, absmax, out, nullptr, s, side, true);
      case 128: return launch_quantize<T, 128>(a, n, q, nullptr, 0, absmax, out, nullptr, s, side, true);
      case 256: return launch_quantize<T, 256>(a, n, q, nullptr, 0, absmax, out, nullptr, s, side, true);
      case 512: return launch_quantize<T, 512>(a, n, q, nullptr, 0, absmax, out, nullptr, s, side, true);
      case 1024: return launch_quantize<T, 1024>(a, n, q, nullptr, 0, absmax, out, nullptr, s, side, true);
      case 2048: return launch_quantize<T, 2048>(a, n, q, nullptr, 0, absmax, out, nullptr, s, side, true);
      case 4096: return launch_quantize<T, 4096>(a, n, q, nullptr, 0, absmax, out, nullptr, s, side, true);
      default: fail("quantize_blockwise_e4m3", cat("blocksize ", blocksize, " reached the kernels"));
    }
  };
  if (t == DType::f16) return go(type_tag<__half>{});
  if (t == DType::bf16) return go(type_tag<__nv_bfloat16>{});
  fail("quantize_blockwise_e4m3", cat("dtype ", dtype_name(t), " is not supported"));
}

void quantize_global_e4m3(DType t, const void* A, int64_t rows, int64_t cols, bool transpose, const QuantIndex& q,
                          float* absmax, uint8_t* out, const uint32_t* hint, int hint_parts, float* scale,
                          int64_t scale_n, float scale_div, cudaStream_t s) {
  const int64_t n = rows * cols;
  if (n == 0) return;
  if (transpose && (rows % 16 || cols % 8 || !aligned16(A) || !aligned16(out)))
    fail("quantize_global_e4m3", cat("the transposed map wants rows % 16 == 0, cols % 8 == 0 and 16-byte aligned "
                                     "pointers; got (", rows, ", ", cols, ")"));
  auto go = [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* a = static_cast<const T*>(A);
    with_absmax_partials(a, n, hint, hint_parts, s, [&](const unsigned* partial, int parts) {
      table16_e4m3<T>(a, rows, cols, transpose, q, partial, parts, absmax, out, scale, scale_n, scale_div, s);
    });
  };
  if (t == DType::f16) return go(type_tag<__half>{});
  if (t == DType::bf16) return go(type_tag<__nv_bfloat16>{});
  fail("quantize_global_e4m3", cat("dtype ", dtype_name(t), " is not supported"));
}

void expand_block_scales(const float* absmax, int64_t rows, int64_t k, int64_t blocksize, float* out,
                         cudaStream_t s) {
  const int64_t n = rows * (k / 128);
  if (n == 0) return;
  expand_block_scales_kernel<<<grid_for(n, 256), 256, 0, s>>>(absmax, rows, k / blocksize, blocksize / 128, n, out);
  OCTET_LAUNCH_CHECK("expand_block_scales_kernel");
}

void quantize_blockwise(DType t, const void* A, int64_t n, const QuantIndex& q, int64_t blocksize, float* absmax,
                        uint8_t* codes, void* fake_out, cudaStream_t s, SideAbsmax* side) {
  if (side) side->parts = 0;
  if (n == 0) return;
  visit_quant(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* a = static_cast<const T*>(A);
    T* f = static_cast<T*>(fake_out);
    switch (blocksize) {
      case 32:
        return launch_quantize<T, 32>(a, n, q, nullptr, 0, absmax, codes, f, s, side);
      case 64:
        return launch_quantize<T, 64>(a, n, q, nullptr, 0, absmax, codes, f, s, side);
      case 128:
        return launch_quantize<T, 128>(a, n, q, nullptr, 0, absmax, codes, f, s, side);
      case 256:
        return launch_quantize<T, 256>(a, n, q, nullptr, 0, absmax, codes, f, s, side);
      case 512:
        return launch_quantize<T, 512>(a, n, q, nullptr, 0, absmax, codes, f, s, side);
      case 1024:
        return launch_quantize<T, 1024>(a, n, q, nullptr, 0, absmax, codes, f, s, side);
      case 2048:
        return launch_quantize<T, 2048>(a, n, q, nullptr, 0, absmax, codes, f, s, side);
      case 4096:
        return launch_quantize<T, 4096>(a, n, q, nullptr, 0, absmax, codes, f, s, side);
      default:
        fail("quantize_blockwise", cat("blocksize ", blocksize, " reached the kernels"));
    }
  });
}

void quantize_global(DType t, const void* A, int64_t n, const QuantIndex& q, float* absmax, uint8_t* codes,
                     void* fake_out, const uint32_t* hint, int hint_parts, cudaStream_t s) {
  if (n == 0) {
    OCTET_CUDA_CHECK(cudaMemsetAsync(absmax, 0, sizeof(float), s));
    return;
  }
  visit_quant(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* a = static_cast<const T*>(A);
    T* fake = static_cast<T*>(fake_out);
    auto finish = [&](const unsigned* partial, int parts) {
      if constexpr (sizeof(T) == 2) {
        if (n >= kTable16MinNumel) return table16_quantize<T>(a, n, q, partial, parts, absmax, codes, fake, s);
      }
      launch_quantize<T, 0>(a, n, q, partial, parts, absmax, codes, fake, s);
    };
    with_absmax_partials(a, n, hint, hint_parts, s, finish);
  });
}

void dequantize(const uint8_t* codes, int64_t n, const float* code, const float* absmax, int log2_blocksize,
                const float* offset, DType out_t, void* out, cudaStream_t s) {
  if (n == 0) return;
  visit_quant(out_t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const auto kernel = dequantize_kernel<T>;
    const unsigned grid = static_cast<unsigned>(std::min<int64_t>((n + kTile - 1) / kTile, 0x7FFFFFFF));
    kernel<<<grid, kThreads, 0, s>>>(codes, n, code, absmax, log2_blocksize, offset, static_cast<T*>(out),
                                     aligned16(codes) && aligned16(out));
    OCTET_LAUNCH_CHECK("dequantize_kernel");
  });
}

void mean_tree(const float* x, int64_t n, float* out, cudaStream_t s) {
  if (n == 0) {
    OCTET_CUDA_CHECK(cudaMemsetAsync(out, 0, sizeof(float), s));
    return;
  }
  auto grid = [](int64_t chunks) { return static_cast<unsigned>(std::min<int64_t>(chunks, 65535)); };
  int64_t chunks = (n + 1023) / 1024;
  double* level = nullptr;
  OCTET_CUDA_CHECK(cudaMallocAsync(&level, sizeof(double) * static_cast<size_t>(chunks), s));
  chunk_sum_kernel<float><<<grid(chunks), 256, 0, s>>>(x, n, level);
  OCTET_LAUNCH_CHECK("chunk_sum_kernel");
  while (chunks > 1) {
    const int64_t next = (chunks + 1023) / 1024;
    double* up = nullptr;
    OCTET_CUDA_CHECK(cudaMallocAsync(&up, sizeof(double) * static_cast<size_t>(next), s));
    chunk_sum_kernel<double><<<grid(next), 256, 0, s>>>(level, chunks, up);
    OCTET_LAUNCH_CHECK("chunk_sum_kernel");
    OCTET_CUDA_CHECK(cudaFreeAsync(level, s));
    level = up;
    chunks = next;
  }
  finish_mean_kernel<<<1, 1, 0, s>>>(level, n, out);
  OCTET_LAUNCH_CHECK("finish_mean_kernel");
  OCTET_CUDA_CHECK(cudaFreeAsync(level, s));
}

void sub_offset(const float* x, int64_t n, const float* offset, float* out, cudaStream_t s) {
  if (n == 0) return;
  sub_offset_kernel<<<grid_for(n, 256), 256, 0, s>>>(x, n, offset, out);
  OCTET_LAUNCH_CHECK("sub_offset_kernel");
}

int side_absmax_capacity() {
  int dev = 0, sms = 0;
  OCTET_CUDA_CHECK(cudaGetDevice(&dev));
  OCTET_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  return sms * (2048 / kThreads);  // the most resident blocks of kThreads per SM
}

uint64_t index_mismatches(const QuantIndex& q, cudaStream_t s) {
  unsigned long long* bad = nullptr;
  OCTET_CUDA_CHECK(cudaMallocAsync(&bad, sizeof *bad, s));
  OCTET_CUDA_CHECK(cudaMemsetAsync(bad, 0, sizeof *bad, s));
  int dev = 0, sms = 0;
  OCTET_CUDA_CHECK(cudaGetDevice(&dev));
  OCTET_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  const size_t smem = index_smem(index_check_kernel, q.compact, false);
  index_check_kernel<<<sms * 8, kThreads, smem, s>>>(static_cast<const qi::Tables*>(q.data), q.shape, q.compact,
                                                      q.compact_offset, bad);
  OCTET_LAUNCH_CHECK("index_check_kernel");
  unsigned long long host = 0;
  OCTET_CUDA_CHECK(cudaMemcpyAsync(&host, bad, sizeof host, cudaMemcpyDeviceToHost, s));
  OCTET_CUDA_CHECK(cudaFreeAsync(bad, s));
  OCTET_CUDA_CHECK(cudaStreamSynchronize(s));
  return host;
}

}  // namespace octet::kernels
