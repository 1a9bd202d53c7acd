// The per-element index lookup of the quant kernels (included by kernels/quant_*.cu only).
// Every CUDA block copies its Code's tables into shared memory once (load_index): with fake
// outputs the 256 code values replicated per lane, then the compact index table that the host
// built once per Code (quant_index.cuh Compact, src/cpu/quant.cpp build_compact). lookup() gives
// an element's index from that table in 9 instructions (compact_lookup), or, for the tables the
// compact form does not fit, from lut_index() on the LUT in global memory. The index rule and
// why the table looks as it does: docs/quant.md, "Index rule" and "Kernels".
#pragma once
#include "kernels/quant_tile.cuh"

namespace octet::kernels::quant_detail {

// Shared memory of the quantize kernels: with fake outputs, the code values replicated per lane
// (rep[q * 32 + lane]: the lookup of code[q] is free of bank conflicts; 32 KiB), then the
// compact table (copied from the Code's device image, where the host built it once:
// quant_index.cuh build_compact). No barrier here: the caller has one before the first lookup.
inline constexpr int kRepFloats = 256 * 32;

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

// What the per-element lookup needs: the compact table or, failing that, the global LUT.
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

// The index of x in the low byte (higher bits are garbage): from the compact table when
// UseCompact (Clamp as in compact_lookup), otherwise lut_index() on the global LUT.
template <bool UseCompact, bool Clamp = true>
__device__ __forceinline__ uint32_t lookup(const Lookup& L, float x) {
  if constexpr (UseCompact)
    return compact_lookup<Clamp>(L, x);
  else
    return static_cast<uint32_t>(
        qi::lut_index(reinterpret_cast<const qi::LutEntry*>(L.gtab + 1), L.shape, *L.gtab, x));
}

}  // namespace octet::kernels::quant_detail
