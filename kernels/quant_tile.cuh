// Tile layout and tile I/O of the quant kernels (included by kernels/quant_*.cu only).
// A group of kThreads threads walks tiles of kTile = 4096 elements; in a tile each warp owns
// kWarpTile = 512 consecutive elements as rows of 16-byte vectors (lane l of row j holds elements
// j*32*Width + l*Width .. +Width), so every load and store of a warp is contiguous. A quantization
// block (32..4096 elements) never straddles a tile. Here: the group (its named barrier and
// scratch), vector loads and stores of values and codes (checked and unchecked), the packing of
// codes and E4M3 bytes, the per-row and per-block max |x| of a tile, and the reduction of the
// absmax kernel's partials (kernels/quant_absmax.cu) that the global kernels start with.
// Float arithmetic uses explicit _rn intrinsics: no contraction, no flush-to-zero.
#pragma once
#include <type_traits>

#include "kernels/common.cuh"
#include "kernels/quant.cuh"

namespace octet::kernels::quant_detail {
namespace qi = quant_index;

inline constexpr int kThreads = 256;  // a group: the threads that share a tile
inline constexpr int kPerThread = 16;
inline constexpr int kWarpTile = 32 * kPerThread;    // 512
inline constexpr int kTile = kThreads * kPerThread;  // 4096, the largest blocksize
inline constexpr unsigned kFull = 0xffffffffu;

// A group of the quantize kernel: kThreads threads that walk their own tiles, synchronize on their
// own named barrier (1 + id; 0 is __syncthreads) and own warp_max (2 * kThreads / 32 floats). A
// CUDA block holds GroupsPerBlock groups (make_group).
struct Group {
  int id, tid;           // group in the block, thread in the group
  int64_t index, count;  // group in the grid, groups in the grid
  float* warp_max;
  __device__ __forceinline__ void sync() const {
    asm volatile("bar.sync %0, %1;" ::"r"(1 + id), "n"(kThreads) : "memory");
  }
};

template <int GroupsPerBlock>
__device__ __forceinline__ Group make_group(float (*warp_max)[2 * kThreads / 32]) {
  // (A shuffle from lane 0 lets the compiler see the id is the same in the whole warp.)
  const int id = GroupsPerBlock == 1 ? 0 : __shfl_sync(0xffffffffu, static_cast<int>(threadIdx.x) / kThreads, 0);
  return {id, static_cast<int>(threadIdx.x) - id * kThreads, int64_t{blockIdx.x} * GroupsPerBlock + id,
          int64_t{gridDim.x} * GroupsPerBlock, warp_max[id]};
}

// Elements of T in a 16-byte vector.
template <class T>
constexpr int vec_width() {
  return 16 / static_cast<int>(sizeof(T));
}

// Width elements from e on as floats; elements at or past n read as 0.
// Stream: read once (evict-first); otherwise an ordinary L2-cached read.
template <class T, int Width, bool Stream = true>
__device__ __forceinline__ void load_vec(const T* __restrict__ p, int64_t e, int64_t n, bool aligned,
                                         float (&v)[Width]) {
  if (aligned && e + Width <= n) {
    union {
      uint4 raw;
      T t[Width];
    } u;
    u.raw = Stream ? __ldcs(reinterpret_cast<const uint4*>(p + e)) : __ldg(reinterpret_cast<const uint4*>(p + e));
#pragma unroll
    for (int q = 0; q < Width; ++q) v[q] = load_f32(u.t[q]);
  } else {
#pragma unroll
    for (int q = 0; q < Width; ++q) v[q] = e + q < n ? load_f32(p[e + q]) : 0.0f;
  }
}

template <class T, int Width>
__device__ __forceinline__ void store_vec(T* __restrict__ p, int64_t e, int64_t n, bool aligned,
                                          const float (&y)[Width]) {
  if (aligned && e + Width <= n) {
    union {
      uint4 raw;
      T t[Width];
    } u;
#pragma unroll
    for (int q = 0; q < Width; ++q) u.t[q] = store_f32<T>(y[q]);
    *reinterpret_cast<uint4*>(p + e) = u.raw;
  } else {
#pragma unroll
    for (int q = 0; q < Width; ++q)
      if (e + q < n) p[e + q] = store_f32<T>(y[q]);
  }
}

// The Width code bytes of one vector (4 for f32 vectors, 8 for 16-bit ones).
template <int Width>
union CodeVec {
  std::conditional_t<Width == 4, uint32_t, uint2> raw;
  uint8_t c[Width];
};

template <int Width>
__device__ __forceinline__ void store_codes(uint8_t* __restrict__ p, int64_t e, int64_t n, bool aligned,
                                            const CodeVec<Width>& c) {
  if (aligned && e + Width <= n) {
    *reinterpret_cast<decltype(c.raw)*>(p + e) = c.raw;
  } else {
#pragma unroll
    for (int q = 0; q < Width; ++q)
      if (e + q < n) p[e + q] = c.c[q];
  }
}

template <int Width>
__device__ __forceinline__ CodeVec<Width> load_codes(const uint8_t* __restrict__ p, int64_t e, int64_t n,
                                                     bool aligned) {
  CodeVec<Width> c;
  if (aligned && e + Width <= n) {
    c.raw = *reinterpret_cast<const decltype(c.raw)*>(p + e);
  } else {
#pragma unroll
    for (int q = 0; q < Width; ++q) c.c[q] = e + q < n ? p[e + q] : 0;
  }
  return c;
}

template <class T, int Width>
__device__ __forceinline__ void unpack(const uint4& raw, float (&v)[Width]) {
  union {
    uint4 raw;
    T t[Width];
  } u;
  u.raw = raw;
#pragma unroll
  for (int q = 0; q < Width; ++q) v[q] = load_f32(u.t[q]);
}

// A full tile's Rows vectors of this thread, read once (unchecked: the tile is in range and aligned).
template <class T, int Rows, int Width>
__device__ __forceinline__ void load_tile(uint4 (&r)[Rows], const T* __restrict__ A, int64_t e) {
#pragma unroll
  for (int j = 0; j < Rows; ++j) r[j] = __ldcs(reinterpret_cast<const uint4*>(A + e + j * 32 * Width));
}

template <class T, int Rows, int Width>
__device__ __forceinline__ void unpack_tile(const uint4 (&r)[Rows], float (&v)[Rows][Width]) {
#pragma unroll
  for (int j = 0; j < Rows; ++j) unpack<T, Width>(r[j], v[j]);
}

// Bytes 0 of q[0..Width) packed into Width code bytes (PRMT).
template <int Width>
__device__ __forceinline__ CodeVec<Width> pack_codes(const uint32_t (&q)[Width]) {
  CodeVec<Width> c;
  uint32_t w[Width / 4];
#pragma unroll
  for (int k = 0; k < Width / 4; ++k)
    w[k] = __byte_perm(__byte_perm(q[4 * k], q[4 * k + 1], 0x0040), __byte_perm(q[4 * k + 2], q[4 * k + 3], 0x0040),
                       0x5410);
  if constexpr (Width == 4)
    c.raw = w[0];
  else
    c.raw = make_uint2(w[0], w[1]);
  return c;
}

// y[0..Width) rounded to E4M3 (RN, saturating) and packed as Width bytes (cvt: two per instruction).
template <int Width>
__device__ __forceinline__ CodeVec<Width> pack_e4m3(const float (&y)[Width]) {
  CodeVec<Width> c;
  uint32_t w[Width / 4];
#pragma unroll
  for (int k = 0; k < Width / 4; ++k) {
    const uint32_t lo = __nv_cvt_float2_to_fp8x2(make_float2(y[4 * k], y[4 * k + 1]), __NV_SATFINITE, __NV_E4M3);
    const uint32_t hi = __nv_cvt_float2_to_fp8x2(make_float2(y[4 * k + 2], y[4 * k + 3]), __NV_SATFINITE, __NV_E4M3);
    w[k] = lo | hi << 16;
  }
  if constexpr (Width == 4)
    c.raw = w[0];
  else
    c.raw = make_uint2(w[0], w[1]);
  return c;
}

// m[j]: |max| of vector row j of this lane. On return m[j] is the absmax of the quantization
// block that holds row j's vector: registers across rows, shuffles inside a row, shared memory
// across warps.
template <int Blocksize, int Width, int Rows>
__device__ __forceinline__ void block_absmax(float (&m)[Rows], const Group& grp, int parity) {
  constexpr int kLanes = Blocksize / Width;  // lanes a block covers in one row
  if constexpr (kLanes <= 32) {
#pragma unroll
    for (int off = 1; off < kLanes; off <<= 1)
#pragma unroll
      for (int j = 0; j < Rows; ++j) m[j] = fmaxf(m[j], __shfl_xor_sync(kFull, m[j], off));
  } else {
    // The Rows rows of a lane fall into Rows / kRowsPerBlock blocks: reduce those in registers
    // first, then shuffle one value per block across the warp, then (blocks wider than Rows rows)
    // across warps.
    constexpr int kBlockRows = kLanes / 32;  // consecutive rows per block
    constexpr int kRowsPerBlock = kBlockRows < Rows ? kBlockRows : Rows;
    constexpr int kBlocksPerLane = Rows / kRowsPerBlock;
    float r[kBlocksPerLane];
#pragma unroll
    for (int g = 0; g < kBlocksPerLane; ++g) {
      r[g] = m[g * kRowsPerBlock];
#pragma unroll
      for (int k = 1; k < kRowsPerBlock; ++k) r[g] = fmaxf(r[g], m[g * kRowsPerBlock + k]);
    }
    // The values are >= 0 and not NaN, so their bits order like them: one integer max over
    // the warp (REDUX) instead of five shuffles and maxima.
#pragma unroll
    for (int g = 0; g < kBlocksPerLane; ++g) r[g] = __uint_as_float(__reduce_max_sync(kFull, __float_as_uint(r[g])));
    if constexpr (kBlockRows > Rows) {
      constexpr int kWarps = kBlockRows / Rows;  // consecutive warps per block
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
    for (int j = 0; j < Rows; ++j) m[j] = r[j / kRowsPerBlock];
  }
}

// max(a, b) with NaN propagating (max.NaN: one FMNMX.NAN).
__device__ __forceinline__ float fmax_nan(float a, float b) {
  float r;
  asm("max.NaN.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
}

// max |x| of 8 halves (f16 or bf16) as a float, on the raw bits: packed maxima with |.| (VHMNMX
// takes three operands), a quarter of the FMNMX a float per element costs. PropagateNan: NaN
// propagates (a row with a NaN gives NaN); otherwise it is ignored, as by fmaxf (the chain starts
// at 0, so a row of NaNs gives 0).
template <class T, bool PropagateNan>
__device__ __forceinline__ float row_absmax16(const uint4& r) {
  using T2 = std::conditional_t<std::is_same_v<T, __half>, __half2, __nv_bfloat162>;
  const uint32_t w[4] = {r.x, r.y, r.z, r.w};
  T2 m;
  memset(&m, 0, sizeof m);
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    T2 h;
    memcpy(&h, &w[k], sizeof h);
    m = PropagateNan ? __hmax2_nan(m, __habs2(h)) : __hmax2(m, __habs2(h));
  }
  T half[2];
  memcpy(half, &m, sizeof half);
  return PropagateNan ? fmax_nan(load_f32(half[0]), load_f32(half[1]))
                      : fmaxf(load_f32(half[0]), load_f32(half[1]));
}

// Blockwise 16-bit full tiles: each row's max |x| from the raw vectors (quantize_tile's rm), and
// whether all the rows are free of NaN and Inf (a second chain with NaN propagating: branch-free,
// as a branch here would diverge before the block absmax's warp collectives). Blocksize 0
// (global) or f32: nothing (false).
template <class T, int Blocksize, int Rows>
__device__ __forceinline__ bool row_maxima(const uint4 (&r)[Rows], float (&rm)[Rows]) {
  bool finite = false;
  if constexpr (Blocksize > 0 && sizeof(T) == 2) {
    finite = true;
#pragma unroll
    for (int j = 0; j < Rows; ++j) {
      rm[j] = row_absmax16<T, false>(r[j]);
      finite &= row_absmax16<T, true>(r[j]) < INFINITY;
    }
  }
  return finite;
}

// Global path: max of the absmax kernel's per-block partials (float bits, NaN canonical), in
// every thread; block 0 writes it to *absmax. Contains a __syncthreads (which also publishes what
// the block wrote to shared memory before it, such as load_index's tables).
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

}  // namespace octet::kernels::quant_detail
