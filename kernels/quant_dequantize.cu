// The dequantize kernel of the quant family: out = code[codes[i]] * absmax[i >> log2_blocksize]
// (+ *offset, the nested absmax's mean) in f32, f16 or bf16, with the tile layout of
// kernels/quant_tile.cuh (kernels/quant.cuh dequantize has the contract).
#include "kernels/quant_launch.cuh"

namespace octet::kernels {
namespace {
using namespace quant_detail;

template <class To, int Width, bool FullTile>
__device__ __forceinline__ void dequantize_vec(const CodeVec<Width>& c, float am, const float* tab,
                                               const float* offset, float off, To* __restrict__ out, int64_t e,
                                               int64_t n, bool aligned) {
  float y[Width];
#pragma unroll
  for (int q = 0; q < Width; ++q) {
    y[q] = __fmul_rn(tab[c.c[q]], am);
    if (offset) y[q] = __fadd_rn(y[q], off);
  }
  store_vec<To, Width>(out, e, FullTile ? INT64_MAX : n, FullTile || aligned, y);
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
  constexpr int Width = vec_width<To>(), Rows = kPerThread / Width;
  using Raw = decltype(CodeVec<Width>::raw);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t lo = warp * kWarpTile + lane * Width;
  const int64_t full = aligned ? n / kTile : 0, tiles = (n + kTile - 1) / kTile;
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    if (tile < full) {
      CodeVec<Width> c[Rows];
      float am[Rows];
#pragma unroll
      for (int j = 0; j < Rows; ++j) {
        const int64_t e = tile * kTile + lo + j * 32 * Width;  // a vector never straddles blocks
        c[j].raw = __ldcs(reinterpret_cast<const Raw*>(codes + e));
        am[j] = __ldg(absmax + (e >> log2b));
      }
#pragma unroll
      for (int j = 0; j < Rows; ++j)
        dequantize_vec<To, Width, true>(c[j], am[j], tab, offset, off, out, tile * kTile + lo + j * 32 * Width, n,
                                        true);
    } else {
#pragma unroll
      for (int j = 0; j < Rows; ++j) {
        const int64_t e = tile * kTile + lo + j * 32 * Width;
        dequantize_vec<To, Width, false>(load_codes<Width>(codes, e, n, aligned),
                                         e < n ? __ldg(absmax + (e >> log2b)) : 0.0f, tab, offset, off, out, e, n,
                                         aligned);
      }
    }
  }
}

}  // namespace

void dequantize(const uint8_t* codes, int64_t n, const float* code, const float* absmax, int log2_blocksize,
                const float* offset, DType out_t, void* out, cudaStream_t s) {
  if (n == 0) return;
  visit_quant(out_t, [&](auto type) {
    using T = typename decltype(type)::type;
    const auto kernel = dequantize_kernel<T>;
    const unsigned grid = static_cast<unsigned>(std::min<int64_t>((n + kTile - 1) / kTile, 0x7FFFFFFF));
    kernel<<<grid, kThreads, 0, s>>>(codes, n, code, absmax, log2_blocksize, offset, static_cast<T*>(out),
                                     aligned16(codes) && aligned16(out));
    OCTET_LAUNCH_CHECK("dequantize_kernel");
  });
}

}  // namespace octet::kernels
