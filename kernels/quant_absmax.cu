// Absmax passes of the quant family: the global absmax kernel (max |A| as per-CUDA-block
// partials, which the global quantize kernels and the 16-bit table path reduce as they start:
// kernels/quant_tile.cuh global_absmax) and the expansion of a row-blocked absmax into the
// per-128-element scales of the tensor-core FP8 GEMM (expand_block_scales, kernels/quant.cuh).
#include "kernels/quant_launch.cuh"

namespace octet::kernels {
namespace {
using namespace quant_detail;

// Max of |A| as float bits (NaN canonical, above Inf) per CUDA block into partial[blockIdx.x]
// (no initialization needed, max is order-free: deterministic). Tiles are walked from the end
// with L2-cached loads, so the start of a tensor larger than L2 is still there when the
// quantize pass (from the start, reading each element again) comes.
template <class T>
__global__ void __launch_bounds__(kThreads)
    absmax_kernel(const T* __restrict__ A, int64_t n, unsigned* __restrict__ partial, bool aligned) {
  constexpr int Width = vec_width<T>(), Rows = kPerThread / Width;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  unsigned m = 0;
  const int64_t tiles = (n + kTile - 1) / kTile;
  for (int64_t k = blockIdx.x; k < tiles; k += gridDim.x) {
    const int64_t base = (tiles - 1 - k) * kTile + warp * kWarpTile + lane * Width;
    float v[Rows][Width];
#pragma unroll
    for (int j = 0; j < Rows; ++j) load_vec<T, Width, false>(A, base + j * 32 * Width, n, aligned, v[j]);
#pragma unroll
    for (int j = 0; j < Rows; ++j)
#pragma unroll
      for (int q = 0; q < Width; ++q) m = max(m, __float_as_uint(v[j][q]) & 0x7FFFFFFFu);
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

// out[c * rows + i] = absmax[i * per_row + c / chunks] (per_row blocks a row, chunks of 128 a block).
__global__ void expand_block_scales_kernel(const float* __restrict__ absmax, int64_t rows, int64_t per_row,
                                           int64_t chunks, int64_t n, float* __restrict__ out) {
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < n; e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t c = e / rows, i = e % rows;
    out[e] = absmax[i * per_row + c / chunks];
  }
}

}  // namespace

namespace quant_detail {

template <class T>
unsigned* absmax_partials(const T* A, int64_t n, cudaStream_t s, int* parts) {
  const auto kernel = absmax_kernel<T>;
  const unsigned blocks = persistent_grid(kernel, 0, (n + kTile - 1) / kTile);
  unsigned* partial = nullptr;
  OCTET_CUDA_CHECK(cudaMallocAsync(&partial, sizeof(unsigned) * blocks, s));
  kernel<<<blocks, kThreads, 0, s>>>(A, n, partial, aligned16(A));
  OCTET_LAUNCH_CHECK("absmax_kernel");
  *parts = static_cast<int>(blocks);
  return partial;
}

template unsigned* absmax_partials<float>(const float*, int64_t, cudaStream_t, int*);
template unsigned* absmax_partials<__half>(const __half*, int64_t, cudaStream_t, int*);
template unsigned* absmax_partials<__nv_bfloat16>(const __nv_bfloat16*, int64_t, cudaStream_t, int*);

}  // namespace quant_detail

void expand_block_scales(const float* absmax, int64_t rows, int64_t k, int64_t blocksize, float* out,
                         cudaStream_t s) {
  const int64_t n = rows * (k / 128);
  if (n == 0) return;
  expand_block_scales_kernel<<<grid_for(n, 256), 256, 0, s>>>(absmax, rows, k / blocksize, blocksize / 128, n, out);
  OCTET_LAUNCH_CHECK("expand_block_scales_kernel");
}

}  // namespace octet::kernels
