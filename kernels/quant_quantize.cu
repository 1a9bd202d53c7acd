// The quantize kernel of the quant family and its launchers: blockwise and global quantize
// (codes and absmax), fake-quantize (the dequantized values in one pass, no codes), the E4M3 bytes
// of the tensor-core FP8 operands, and the side job that reduces max |x| of a second tensor in the
// same launch (SideAbsmax: the FP8 forward's B). kernels/quant.cuh has the contracts.
// Persistent groups of 256 threads (one to four per CUDA block) walk tiles of 4096 elements
// (kernels/quant_tile.cuh); full aligned tiles take a branch-free path (the next tile's 16-byte
// loads are issued before this tile is computed; one 4-byte lookup per element in the Code's
// compact table, kernels/quant_lookup.cuh, without the clamp of x where a tile holds no NaN or
// Inf); partial or unaligned tiles take a checked path. Why it is built this way: docs/quant.md,
// "Kernels". Large 16-bit global quantizations go to the table path (kernels/quant_table16.cu).
#include "kernels/quant_launch.cuh"

namespace octet::kernels {
namespace {
using namespace quant_detail;

// The side job of the blockwise fake-quantize kernel (kernels::SideAbsmax, typed).
template <class T>
struct SideMax {
  const T* x = nullptr;
  int64_t n = 0;
  unsigned* partial = nullptr;
  bool aligned = false;
};

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

// One tile (thread's share: v[Rows][Width] at base + j*32*Width). FullTile: the whole tile is in
// range and every pointer 16-byte aligned (no checks). Blocksize > 0: blockwise; 0: global (gabs).
// Fake: writes code[q] * absmax in T to fake; otherwise the codes. E4M3 (with Fake): writes
// e4m3(code[q] * kE4M3Mul) bytes to codes instead of the fake values. rm, finite: with FullTile,
// Blocksize > 0 and a 16-bit T, each row's max |x| and whether no row holds NaN or Inf
// (row_maxima); unused otherwise. Finite rows take the lookups without the clamp.
template <class T, int Blocksize, bool Fake, bool E4M3, bool UseCompact, bool FullTile, int Rows, int Width>
__device__ __forceinline__ void quantize_tile(const float* rm, bool finite, float (&v)[Rows][Width], int64_t base,
                                              int it, int64_t n, bool aligned, const Lookup& L, float gabs,
                                              const GlobalDiv& div, const Group& g, float* __restrict__ absmax,
                                              uint8_t* __restrict__ codes, T* __restrict__ fake) {
  float m[Rows];
  if constexpr (Blocksize > 0) {
#pragma unroll
    for (int j = 0; j < Rows; ++j) {
      if constexpr (FullTile && sizeof(T) == 2) {
        m[j] = rm[j];
      } else {
        m[j] = 0.0f;  // fmaxf ignores NaN
#pragma unroll
        for (int q = 0; q < Width; ++q) m[j] = fmaxf(m[j], fabsf(v[j][q]));
      }
    }
    block_absmax<Blocksize, Width, Rows>(m, g, it);
    constexpr int kBlockRows = Blocksize / Width / 32;  // consecutive rows a block spans (0: part of one)
    constexpr int kRowsPerBlock = kBlockRows > 1 ? (kBlockRows < Rows ? kBlockRows : Rows) : 1;  // rows sharing a block
    qi::Scale sc[Rows / kRowsPerBlock];
    bool unit = true;  // every scale s == 1 (absmax in [2^-126, 2^126)): x = v * r, one multiply
#pragma unroll
    for (int j = 0; j < Rows; j += kRowsPerBlock) {
      const int64_t e = base + j * 32 * Width;
      if ((FullTile || e < n) && (e & (Blocksize - 1)) == 0) absmax[e / Blocksize] = m[j];
      sc[j / kRowsPerBlock] = qi::block_scale(m[j]);
      unit &= sc[j / kRowsPerBlock].s == 1.0f;
    }
    if (unit) {
#pragma unroll
      for (int j = 0; j < Rows; ++j)
#pragma unroll
        for (int q = 0; q < Width; ++q) v[j][q] = __fmul_rn(v[j][q], sc[j / kRowsPerBlock].r);
    } else {
#pragma unroll
      for (int j = 0; j < Rows; ++j)
#pragma unroll
        for (int q = 0; q < Width; ++q) v[j][q] = qi::block_x(v[j][q], sc[j / kRowsPerBlock]);
    }
  } else {
    // x = v / gabs without a branch per element: y = RN(1 / gabs), q0 = RN(v * y), then two
    // corrections q += RN(v - gabs * q) * y (the remainders are exact), which is RN(v / gabs)
    // while nothing underflows: gabs in [2^-100, 2^100], |v| >= max(2^-100, gabs * 2^-125) or
    // v == 0. A thread with any element outside that takes global_x (__fdiv_rn) for its tile.
    float x[Rows][Width];
    bool slow = !div.fast;
#pragma unroll
    for (int j = 0; j < Rows; ++j) {
      m[j] = gabs;
#pragma unroll
      for (int q = 0; q < Width; ++q) {
        const float a = v[j][q], q0 = __fmul_rn(a, div.y), q1 = __fmaf_rn(__fmaf_rn(-gabs, q0, a), div.y, q0);
        x[j][q] = __fmaf_rn(__fmaf_rn(-gabs, q1, a), div.y, q1);
        slow |= !(fabsf(a) >= div.lim || a == 0.0f);
      }
    }
    if (slow) {
#pragma unroll
      for (int j = 0; j < Rows; ++j)
#pragma unroll
        for (int q = 0; q < Width; ++q) v[j][q] = qi::global_x(v[j][q], gabs);
    } else {
#pragma unroll
      for (int j = 0; j < Rows; ++j)
#pragma unroll
        for (int q = 0; q < Width; ++q) v[j][q] = x[j][q];
    }
  }
  auto emit = [&](auto clamp_tag) {
    constexpr bool Clamp = decltype(clamp_tag)::value;
#pragma unroll
    for (int j = 0; j < Rows; ++j) {
      const int64_t e = base + j * 32 * Width;
      uint32_t q[Width];
#pragma unroll
      for (int k = 0; k < Width; ++k) q[k] = lookup<UseCompact, Clamp>(L, v[j][k]);
      if constexpr (Fake) {
        float y[Width];
#pragma unroll
        for (int k = 0; k < Width; ++k) y[k] = __fmul_rn(L.code[(q[k] & 0xFF) << 5], E4M3 ? kE4M3Mul : m[j]);
        if constexpr (E4M3)
          store_codes<Width>(codes, e, FullTile ? INT64_MAX : n, FullTile || aligned, pack_e4m3<Width>(y));
        else
          store_vec<T, Width>(fake, e, FullTile ? INT64_MAX : n, FullTile || aligned, y);
      } else {
        store_codes<Width>(codes, e, FullTile ? INT64_MAX : n, FullTile || aligned, pack_codes<Width>(q));
      }
    }
  };
  // Blockwise x of finite v lies in [-(1 + 2^-23), 1 + 2^-23]: no clamp needed (Compact). f32
  // tiles keep the clamp: their kernel is bound by memory, and its row maxima are float FMNMX,
  // where a NaN test would cost an instruction per element.
  if constexpr (UseCompact && FullTile && Blocksize > 0 && sizeof(T) == 2) {
    if (finite && L.c.noclamp) return emit(std::false_type{});
  }
  emit(std::true_type{});
}

// The side job's state (quantize_kernel): this group's next side tile k counts from the end
// (tile index full - 1 - k), Rows vectors per thread in flight between load() and add().
template <class T>
struct SideWalk {
  static constexpr int Width = vec_width<T>(), Rows = kPerThread / Width;
  SideMax<T> s;
  Group g;
  int64_t full = 0, k = 0;
  bool pending = false;
  uint4 r[Rows];
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
      for (int j = 0; j < Rows; ++j) r[j] = __ldg(reinterpret_cast<const uint4*>(base + j * 32 * Width));
    }
  }
  __device__ __forceinline__ void add() {
    if (!pending) return;
#pragma unroll
    for (int j = 0; j < Rows; ++j) m.add(r[j]);
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

// Blocksize > 0: blockwise (absmax per block, written to absmax); 0: global (the absmax kernel's
// `parts` partials reduced here; block 0 writes the result to *absmax). Fake: writes
// code[q] * absmax in T to fake (codes unused); otherwise the codes. E4M3 (with Fake): the bytes
// e4m3(code[q] * kE4M3Mul) to codes (fake unused). Full aligned tiles first, TilesInFlight of them
// per thread (the tile TilesInFlight ahead is loaded before this one is computed; the first loads
// are issued before the tables are set up), then the partial tile (or, for unaligned pointers,
// every tile) through the checked path.
// Side job (blockwise fake only; side.x null: none): max |x| of another tensor of T into
// side.partial[group index] (the amax-hint format, for quantize_global), its full tiles walked
// from the end (L2-cached loads, as absmax_kernel) one per full A tile, loaded before that
// tile's lookups so the loads overlap them; the rest after the A tiles.
// Groups of 256 threads per CUDA block. Blockwise f16/bf16 codes kernels: 4, one block per SM
// (32 warps, at most 64 registers, one copy of the tables per SM; the checked path of blocksizes
// 32..256 spills a few registers); measured on an H200 against three blocks of 256 per SM: f16
// codes 4 % faster, f32 codes 1-3 % slower. f32 codes, fake and global kernels: 1, three blocks
// per SM (at most 80 registers: with 64 the fake kernels' side job and the global kernels' loop
// spill).
template <class T, int Blocksize, int TilesInFlight, bool Fake, bool E4M3, int Groups>
__global__ void __launch_bounds__(Groups * kThreads, Groups == 1 ? 3 : 1)
    quantize_kernel(const T* __restrict__ A, int64_t n, const qi::Tables* __restrict__ gtab, qi::LutShape shape,
                    qi::Compact c, int32_t compact_offset, const unsigned* __restrict__ partial, int parts,
                    float* __restrict__ absmax, uint8_t* __restrict__ codes, T* __restrict__ fake, bool aligned,
                    SideMax<T> side) {
  extern __shared__ uint32_t smem[];
  __shared__ float warp_max[Groups][2 * kThreads / 32];
  const Group g = make_group<Groups>(warp_max);
  constexpr int Width = vec_width<T>(), Rows = kPerThread / Width;
  const int lane = threadIdx.x & 31, warp = g.tid >> 5;
  const int64_t off = warp * kWarpTile + lane * Width;
  const int64_t full = aligned ? n / kTile : 0, tiles = (n + kTile - 1) / kTile, stride = g.count;
  int64_t tile = g.index;
  uint4 X[Rows], Y[Rows];
  if (tile < full) load_tile<T, Rows, Width>(X, A, tile * kTile + off);
  if (TilesInFlight == 2 && tile + stride < full) load_tile<T, Rows, Width>(Y, A, (tile + stride) * kTile + off);
  load_index(smem, Fake, gtab, c, compact_offset);
  float gabs = 0.0f;
  if constexpr (Blocksize == 0)
    gabs = global_absmax(partial, parts, absmax, reinterpret_cast<unsigned*>(&warp_max[0][0]));
  else
    __syncthreads();
  const GlobalDiv div = Blocksize == 0 ? global_div(gabs) : GlobalDiv{};
  const Lookup L = make_lookup(smem, Fake, gtab, c, shape);
  constexpr bool kSide = Fake && Blocksize > 0;
  SideWalk<T> sw(side, kSide && side.x != nullptr, g);
  auto walk = [&](auto compact_tag) {
    constexpr bool UseCompact = decltype(compact_tag)::value;
    int it = 0;  // this group's tile count (parity for block_absmax)
    while (tile < full) {
      {
        float v[Rows][Width];
        unpack_tile<T, Rows, Width>(X, v);
        float rm[Rows];
        const bool finite = row_maxima<T, Blocksize, Rows>(X, rm);
        if (tile + TilesInFlight * stride < full)
          load_tile<T, Rows, Width>(X, A, (tile + TilesInFlight * stride) * kTile + off);
        if constexpr (kSide) sw.load(off);
        quantize_tile<T, Blocksize, Fake, E4M3, UseCompact, true, Rows, Width>(
            rm, finite, v, tile * kTile + off, it, n, true, L, gabs, div, g, absmax, codes, fake);
        if constexpr (kSide) sw.add();
        tile += stride, ++it;
      }
      if constexpr (TilesInFlight == 2) {
        if (tile >= full) break;
        float v[Rows][Width];
        unpack_tile<T, Rows, Width>(Y, v);
        float rm[Rows];
        const bool finite = row_maxima<T, Blocksize, Rows>(Y, rm);
        if (tile + 2 * stride < full) load_tile<T, Rows, Width>(Y, A, (tile + 2 * stride) * kTile + off);
        if constexpr (kSide) sw.load(off);
        quantize_tile<T, Blocksize, Fake, E4M3, UseCompact, true, Rows, Width>(
            rm, finite, v, tile * kTile + off, it, n, true, L, gabs, div, g, absmax, codes, fake);
        if constexpr (kSide) sw.add();
        tile += stride, ++it;
      }
    }
    for (; tile < tiles; tile += stride, ++it) {
      const int64_t base = tile * kTile + off;
      float v[Rows][Width];
#pragma unroll
      for (int j = 0; j < Rows; ++j) load_vec<T, Width>(A, base + j * 32 * Width, n, aligned, v[j]);
      quantize_tile<T, Blocksize, Fake, E4M3, UseCompact, false, Rows, Width>(nullptr, false, v, base, it, n, aligned,
                                                                              L, gabs, div, g, absmax, codes, fake);
    }
  };
  if (c.entries > 0)
    walk(std::true_type{});
  else
    walk(std::false_type{});
  if constexpr (kSide)
    if (side.x) sw.finish(off, reinterpret_cast<unsigned*>(g.warp_max));
}

// Full tiles in flight per thread: 1 for f32 (4 x 16 bytes), 2 for f16/bf16 (the same bytes
// in flight). Measured on an H200: 2 tiles for f32 spill registers and lose 3-8 %.
// The kernel writes codes or fake outputs, not both (the library never asks for both on CUDA:
// fake-quantize writes no codes); given both, the codes pass runs first, then the fake pass.
// e4m3: (Fake, codes given, fake null) the e4m3 bytes of the fake values / absmax * kE4M3Mul.
template <class T, int Blocksize>
void launch_quantize(const T* A, int64_t n, const QuantIndex& q, const unsigned* partial, int parts, float* absmax,
                     uint8_t* codes, T* fake, cudaStream_t s, SideAbsmax* side = nullptr, bool e4m3 = false) {
  constexpr int kTilesInFlight = sizeof(T) == 4 ? 1 : 2;
  auto launch = [&](auto fake_tag, auto e4m3_tag) {
    constexpr bool Fake = decltype(fake_tag)::value, E4M3 = decltype(e4m3_tag)::value;
    constexpr int kGroups = Fake || Blocksize == 0 || sizeof(T) == 4 ? 1 : 4;  // see quantize_kernel
    const auto kernel = quantize_kernel<T, Blocksize, kTilesInFlight, Fake, E4M3, kGroups>;
    const size_t smem = index_smem(kernel, q.compact, Fake);
    const bool aligned = aligned16(A) && (Fake && !E4M3 ? aligned16(fake) : aligned16(codes));
    SideMax<T> sm;
    int64_t tiles = (n + kTile - 1) / kTile;
    if (Fake && side && side->n > 0) {
      sm = {static_cast<const T*>(side->x), side->n, side->partial, aligned16(side->x)};
      tiles = std::max(tiles, (side->n + kTile - 1) / kTile);
    }
    const unsigned grid = persistent_grid(kernel, smem, (tiles + kGroups - 1) / kGroups, kGroups * kThreads);
    if (sm.x) side->parts = static_cast<int>(grid) * kGroups;
    kernel<<<grid, kGroups * kThreads, smem, s>>>(A, n, static_cast<const qi::Tables*>(q.data), q.shape, q.compact,
                                                  q.compact_offset, partial, parts, absmax, codes, fake, aligned, sm);
    OCTET_LAUNCH_CHECK("quantize_kernel");
  };
  if constexpr (Blocksize > 0 && sizeof(T) == 2) {
    if (e4m3) return launch(std::true_type{}, std::true_type{});
  }
  if (codes) launch(std::false_type{}, std::false_type{});
  if (fake) launch(std::true_type{}, std::false_type{});
}

}  // namespace

void quantize_blockwise(DType t, const void* A, int64_t n, const QuantIndex& q, int64_t blocksize, float* absmax,
                        uint8_t* codes, void* fake_out, cudaStream_t s, SideAbsmax* side) {
  if (side) side->parts = 0;
  if (n == 0) return;
  visit_quant(t, [&](auto type) {
    using T = typename decltype(type)::type;
    visit_blocksize(blocksize, "quantize_blockwise", [&](auto block) {
      launch_quantize<T, decltype(block)::value>(static_cast<const T*>(A), n, q, nullptr, 0, absmax, codes,
                                                 static_cast<T*>(fake_out), s, side);
    });
  });
}

void quantize_blockwise_e4m3(DType t, const void* A, int64_t n, const QuantIndex& q, int64_t blocksize,
                             float* absmax, uint8_t* out, cudaStream_t s, SideAbsmax* side) {
  if (side) side->parts = 0;
  if (n == 0) return;
  visit_quant16(t, "quantize_blockwise_e4m3", [&](auto type) {
    using T = typename decltype(type)::type;
    visit_blocksize(blocksize, "quantize_blockwise_e4m3", [&](auto block) {
      launch_quantize<T, decltype(block)::value>(static_cast<const T*>(A), n, q, nullptr, 0, absmax, out, nullptr, s,
                                                 side, true);
    });
  });
}

void quantize_global(DType t, const void* A, int64_t n, const QuantIndex& q, float* absmax, uint8_t* codes,
                     void* fake_out, const uint32_t* hint, int hint_parts, cudaStream_t s) {
  if (n == 0) {
    OCTET_CUDA_CHECK(cudaMemsetAsync(absmax, 0, sizeof(float), s));
    return;
  }
  visit_quant(t, [&](auto type) {
    using T = typename decltype(type)::type;
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

int side_absmax_capacity() {
  int dev = 0, sms = 0;
  OCTET_CUDA_CHECK(cudaGetDevice(&dev));
  OCTET_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  return sms * (2048 / kThreads);  // the most resident blocks of kThreads per SM
}

}  // namespace octet::kernels
