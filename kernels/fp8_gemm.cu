// CUDA kernels of the fp8_gemm family: scaled casts to FP8 with a fused amax (and a fused
// transposed copy and column sums through a shared-memory tile), the amax-only pass of current
// scaling (or its one-block reduction of an amax hint), dequantization, the one-block scale
// updates of the scaling recipes, and a pad/crop copy for shapes cuBLASLt cannot take.
// amax is an order-free max over ordered bits (amax_bits), so it is the same on every run.
// Column sums are f32 partials per 64-row tile, then summed over the tiles in a fixed order.
#include <atomic>
#include <type_traits>

#include "kernels/common.cuh"
#include "kernels/fp8_gemm.cuh"
#include "src/cpu/fp8_gemm.hpp"

namespace octet::kernels {
namespace {

template <__nv_fp8_interpretation_t F>
using fp8_format = std::integral_constant<__nv_fp8_interpretation_t, F>;

template <class T, int V>
struct alignas(sizeof(T) * V) Vec {
  T v[V];
};

template <__nv_fp8_interpretation_t F>
__device__ __forceinline__ uint8_t to_fp8(float v) {
  return __nv_cvt_float_to_fp8(v, __NV_SATFINITE, F);
}

// Folds the block's max of v into *amax (all threads of the block must call it).
__device__ void block_amax(uint32_t v, uint32_t* amax) {
  if (amax == nullptr) return;
  const uint32_t w = block_max_u32(v);
  if (threadIdx.x == 0 && threadIdx.y == 0 && w != 0u) atomicMax(amax, w);
}

// Elementwise cast, V elements (16 bytes of input) per step; the tail goes one by one.
template <class In, __nv_fp8_interpretation_t F, int V>
__global__ void cast_kernel(const In* __restrict__ x, const float* __restrict__ scale, uint8_t* __restrict__ q,
                            int64_t n, uint32_t* amax) {
  const float s = *scale;
  uint32_t m = 0;
  const int64_t tid = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t nv = n / V;
  for (int64_t i = tid; i < nv; i += stride) {
    const Vec<In, V> in = reinterpret_cast<const Vec<In, V>*>(x)[i];
    Vec<uint8_t, V> out;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const float f = load_f32(in.v[j]);
      m = max(m, amax_bits(__float_as_uint(f)));
      out.v[j] = to_fp8<F>(f * s);
    }
    reinterpret_cast<Vec<uint8_t, V>*>(q)[i] = out;
  }
  for (int64_t i = nv * V + tid; i < n; i += stride) {
    const float f = load_f32(x[i]);
    m = max(m, amax_bits(__float_as_uint(f)));
    q[i] = to_fp8<F>(f * s);
  }
  block_amax(m, amax);
}

// amax alone (current scaling's pass before the cast), U independent 16-byte loads in flight per
// thread. It walks x from the end: the cast that follows starts at the front and finds that part
// still in L2.
template <class In, int V>
__global__ void amax_kernel(const In* __restrict__ x, int64_t n, uint32_t* amax) {
  constexpr int U = 4;
  uint32_t m = 0;
  const int64_t tid = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t nv = n / V;
  const auto* xv = reinterpret_cast<const Vec<In, V>*>(x);
  for (int64_t base = tid; base < nv; base += U * stride) {
    Vec<In, V> in[U];
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (base + u * stride < nv) in[u] = xv[nv - 1 - (base + u * stride)];
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (base + u * stride < nv)
#pragma unroll
        for (int j = 0; j < V; ++j) m = max(m, amax_bits(__float_as_uint(load_f32(in[u].v[j]))));
  }
  for (int64_t i = nv * V + tid; i < n; i += stride) m = max(m, amax_bits(__float_as_uint(load_f32(x[i]))));
  block_amax(m, amax);
}

// amax from an amax hint (the per-block maxima an elementwise op wrote, kernels/ops.cuh): one block.
__global__ void amax_partials_kernel(const uint32_t* __restrict__ partials, int count, uint32_t* amax) {
  uint32_t m = 0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) m = max(m, partials[i]);
  m = block_max_u32(m);
  if (threadIdx.x == 0) *amax = m;
}

// Cast of x (rows, cols) writing q (rows, cols) and, when not null, q_t (cols, rows) through a
// 64x64 shared tile, 256 threads: each thread moves 8 consecutive elements per pass (16-byte loads
// of bf16, 8-byte FP8 stores) when `vec` (all pointers and both dims allow it), element by element
// otherwise and on partial tiles. The tile pitch of 65 bytes keeps the column reads conflict-free.
// With colsum (f32, (row tiles, cols)) the tile's f32 column sums of x go to its row.
template <class In, __nv_fp8_interpretation_t F>
__global__ void __launch_bounds__(256) cast_transpose_kernel(const In* __restrict__ x, const float* __restrict__ scale,
                                                             uint8_t* __restrict__ q, uint8_t* __restrict__ q_t,
                                                             int64_t rows, int64_t cols, bool vec, uint32_t* amax,
                                                             float* __restrict__ colsum) {
  __shared__ uint8_t tile[64][65];
  __shared__ float csum[32][65];
  const float s = *scale;
  uint32_t m = 0;
  const int64_t tiles_c = (cols + 63) / 64, tiles = tiles_c * ((rows + 63) / 64);
  const int lane8 = threadIdx.x % 8, row8 = threadIdx.x / 8;  // 8 threads per 64-element line
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int64_t r0 = (t / tiles_c) * 64, c0 = (t % tiles_c) * 64;
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int pass = 0; pass < 2; ++pass) {
      const int lr = pass * 32 + row8, lc = lane8 * 8;
      const int64_t r = r0 + lr, c = c0 + lc;
      if (r >= rows) continue;
      if (vec && c + 8 <= cols) {
        const Vec<In, 8> in = *reinterpret_cast<const Vec<In, 8>*>(x + r * cols + c);
        Vec<uint8_t, 8> out;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const float f = load_f32(in.v[j]);
          m = max(m, amax_bits(__float_as_uint(f)));
          acc[j] += f;
          out.v[j] = to_fp8<F>(f * s);
          tile[lr][lc + j] = out.v[j];
        }
        *reinterpret_cast<Vec<uint8_t, 8>*>(q + r * cols + c) = out;
      } else {
        for (int j = 0; j < 8 && c + j < cols; ++j) {
          const float f = load_f32(x[r * cols + c + j]);
          m = max(m, amax_bits(__float_as_uint(f)));
          acc[j] += f;
          const uint8_t b = to_fp8<F>(f * s);
          q[r * cols + c + j] = b;
          tile[lr][lc + j] = b;
        }
      }
    }
    if (colsum)
#pragma unroll
      for (int j = 0; j < 8; ++j) csum[row8][lane8 * 8 + j] = acc[j];
    __syncthreads();
    if (colsum && threadIdx.x < 64 && c0 + threadIdx.x < cols) {
      float total = 0.0f;
      for (int i = 0; i < 32; ++i) total += csum[i][threadIdx.x];
      colsum[(r0 / 64) * cols + c0 + threadIdx.x] = total;
    }
    for (int pass = 0; q_t && pass < 2; ++pass) {
      const int lc = pass * 32 + row8, lr = lane8 * 8;  // q_t row c0 + lc, elements r0 + lr ..
      const int64_t c = c0 + lc, r = r0 + lr;
      if (c >= cols) continue;
      if (vec && r + 8 <= rows) {
        Vec<uint8_t, 8> out;
#pragma unroll
        for (int j = 0; j < 8; ++j) out.v[j] = tile[lr + j][lc];
        *reinterpret_cast<Vec<uint8_t, 8>*>(q_t + c * rows + r) = out;
      } else {
        for (int j = 0; j < 8 && r + j < rows; ++j) q_t[c * rows + r + j] = tile[lr + j][lc];
      }
    }
    __syncthreads();
  }
  block_amax(m, amax);
}

// out[c] = sum over the tile rows of partial (tiles, cols), a block per 32 columns, 8 thread rows
// combined in a fixed order; rounded once to Out.
template <class Out>
__global__ void colsum_reduce_kernel(const float* __restrict__ partial, int64_t tiles, int64_t cols,
                                     Out* __restrict__ out) {
  __shared__ float part[8][33];
  const int64_t c = blockIdx.x * 32 + static_cast<int64_t>(threadIdx.x);
  float acc = 0.0f;
  if (c < cols)
    for (int64_t r = threadIdx.y; r < tiles; r += 8) acc += partial[r * cols + c];
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y != 0 || c >= cols) return;
  float total = 0.0f;
  for (int i = 0; i < 8; ++i) total += part[i][threadIdx.x];
  out[c] = store_f32<Out>(total);
}

template <class Q, class Out>
__global__ void dequantize_kernel(const Q* __restrict__ q, const float* __restrict__ scale_inv, Out* __restrict__ out,
                                  int64_t n) {
  const float s = *scale_inv;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = store_f32<Out>(load_f32(q[i]) * s);
}

__global__ void current_scale_kernel(const float* amax, float fp8_max, int margin, float* scale, float* scale_inv) {
  const float s = fp8_scale_for(*amax, fp8_max, margin, 1.0f);
  *scale = s;
  *scale_inv = 1.0f / s;
}

constexpr int kScaleThreads = 256;

// One block: max over the history (NaN ignored), the new scale, then the roll by one slot,
// chunk by chunk from the end so that no chunk reads a slot another has written.
__global__ void delayed_scale_kernel(float* history, int64_t len, bool use_max, const float* previous, float fp8_max,
                                     int margin, float* scale, float* scale_inv) {
  __shared__ float part[kScaleThreads];
  float m = 0.0f;
  if (use_max)
    for (int64_t i = threadIdx.x; i < len; i += blockDim.x) m = history[i] > m ? history[i] : m;
  part[threadIdx.x] = m;
  __syncthreads();
  for (int w = kScaleThreads / 2; w > 0; w /= 2) {
    if (threadIdx.x < w && part[threadIdx.x + w] > part[threadIdx.x]) part[threadIdx.x] = part[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const float s = fp8_scale_for(use_max ? part[0] : history[0], fp8_max, margin, *previous);
    *scale = s;
    *scale_inv = 1.0f / s;
  }
  __syncthreads();
  for (int64_t hi = len - 1; hi >= 1; hi -= kScaleThreads) {
    const int64_t i = hi - threadIdx.x;
    const float v = i >= 1 ? history[i - 1] : 0.0f;
    __syncthreads();
    if (i >= 1) history[i] = v;
    __syncthreads();
  }
  if (threadIdx.x == 0) history[0] = 0.0f;
}

template <class T>
__global__ void copy2d_kernel(const T* __restrict__ src, int64_t src_rows, int64_t src_cols, T* __restrict__ dst,
                              int64_t dst_rows, int64_t dst_cols) {
  const int64_t n = dst_rows * dst_cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / dst_cols, c = i % dst_cols;
    dst[i] = r < src_rows && c < src_cols ? src[r * src_cols + c] : T(0);
  }
}

template <class F>
void with_format(DType fp8, F&& f) {
  if (fp8 == DType::f8_e4m3) f(fp8_format<__NV_E4M3>{});
  else f(fp8_format<__NV_E5M2>{});
}

}  // namespace

int64_t fp8_colsum_tiles(int64_t rows) { return (rows + 63) / 64; }

void fp8_cast(DType in_t, const void* x, DType fp8, const float* scale, void* q, void* q_t, int64_t rows,
              int64_t cols, float* amax, float* colsum_partial, void* colsum, cudaStream_t s) {
  if (amax) OCTET_CUDA_CHECK(cudaMemsetAsync(amax, 0, sizeof(float), s));
  if (colsum && rows == 0 && cols > 0) OCTET_CUDA_CHECK(cudaMemsetAsync(colsum, 0, cols * dtype_size(in_t), s));
  const int64_t n = rows * cols;
  if (n == 0) return;
  auto* amax_u = reinterpret_cast<uint32_t*>(amax);
  auto* q8 = static_cast<uint8_t*>(q);
  visit_float(in_t, "cast_to_fp8", [&](auto tag) {
    using In = typename decltype(tag)::type;
    const In* in = static_cast<const In*>(x);
    constexpr int V = 16 / sizeof(In);
    if (q == nullptr) {  // amax only: a grid that stays resident, so that the walk goes end to front
      static std::atomic<int> sms[64];
      int dev = 0, count = 0;
      OCTET_CUDA_CHECK(cudaGetDevice(&dev));
      if (dev < 64) count = sms[dev].load();
      if (count == 0) {
        OCTET_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, dev));
        if (dev < 64) sms[dev].store(count);
      }
      const int64_t resident = int64_t{count} * 8;
      if (reinterpret_cast<uintptr_t>(x) % 16 == 0)
        amax_kernel<In, V><<<grid_for(n / V, 256, resident), 256, 0, s>>>(in, n, amax_u);
      else
        amax_kernel<In, 1><<<grid_for(n, 256, resident), 256, 0, s>>>(in, n, amax_u);
      OCTET_LAUNCH_CHECK("amax_kernel");
      return;
    }
    with_format(fp8, [&](auto format) {
      constexpr __nv_fp8_interpretation_t F = decltype(format)::value;
      if (q_t || colsum) {
        const int64_t tiles = fp8_colsum_tiles(rows) * ((cols + 63) / 64);
        const unsigned grid = static_cast<unsigned>(tiles < 65535 ? tiles : 65535);
        const bool vec = cols % 8 == 0 && rows % 8 == 0 && reinterpret_cast<uintptr_t>(x) % (8 * sizeof(In)) == 0 &&
                         reinterpret_cast<uintptr_t>(q) % 8 == 0 && reinterpret_cast<uintptr_t>(q_t) % 8 == 0;
        cast_transpose_kernel<In, F><<<grid, 256, 0, s>>>(in, scale, q8, static_cast<uint8_t*>(q_t), rows, cols, vec,
                                                          amax_u, colsum ? colsum_partial : nullptr);
        OCTET_LAUNCH_CHECK("cast_transpose_kernel");
        if (colsum) {
          colsum_reduce_kernel<<<static_cast<unsigned>((cols + 31) / 32), dim3(32, 8), 0, s>>>(
              colsum_partial, fp8_colsum_tiles(rows), cols, static_cast<In*>(colsum));
          OCTET_LAUNCH_CHECK("colsum_reduce_kernel");
        }
        return;
      }
      const bool vec = reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(q) % V == 0;
      const unsigned grid = grid_for(vec ? n / V : n, 256);
      if (vec) cast_kernel<In, F, V><<<grid, 256, 0, s>>>(in, scale, q8, n, amax_u);
      else cast_kernel<In, F, 1><<<grid, 256, 0, s>>>(in, scale, q8, n, amax_u);
      OCTET_LAUNCH_CHECK("cast_kernel");
    });
  });
}

void fp8_amax_partials(const uint32_t* partials, int count, float* amax, cudaStream_t s) {
  amax_partials_kernel<<<1, 1024, 0, s>>>(partials, count, reinterpret_cast<uint32_t*>(amax));
  OCTET_LAUNCH_CHECK("amax_partials_kernel");
}

void fp8_dequantize(DType fp8, const void* q, const float* scale_inv, DType out_t, void* out, int64_t n,
                    cudaStream_t s) {
  if (n == 0) return;
  visit_float(out_t, "dequantize_fp8", [&](auto tag) {
    using Out = typename decltype(tag)::type;
    if (fp8 == DType::f8_e4m3)
      dequantize_kernel<<<grid_for(n, 256), 256, 0, s>>>(static_cast<const __nv_fp8_e4m3*>(q), scale_inv,
                                                         static_cast<Out*>(out), n);
    else
      dequantize_kernel<<<grid_for(n, 256), 256, 0, s>>>(static_cast<const __nv_fp8_e5m2*>(q), scale_inv,
                                                         static_cast<Out*>(out), n);
    OCTET_LAUNCH_CHECK("dequantize_kernel");
  });
}

void fp8_current_scale(const float* amax, float fp8_max, int margin, float* scale, float* scale_inv, cudaStream_t s) {
  current_scale_kernel<<<1, 1, 0, s>>>(amax, fp8_max, margin, scale, scale_inv);
  OCTET_LAUNCH_CHECK("current_scale_kernel");
}

void fp8_delayed_scale(float* history, int64_t len, bool use_max, const float* previous, float fp8_max, int margin,
                       float* scale, float* scale_inv, cudaStream_t s) {
  delayed_scale_kernel<<<1, kScaleThreads, 0, s>>>(history, len, use_max, previous, fp8_max, margin, scale,
                                                   scale_inv);
  OCTET_LAUNCH_CHECK("delayed_scale_kernel");
}

void copy2d(const void* src, int64_t src_rows, int64_t src_cols, void* dst, int64_t dst_rows, int64_t dst_cols,
            size_t elem_size, cudaStream_t s) {
  const int64_t n = dst_rows * dst_cols;
  if (n == 0) return;
  const unsigned grid = grid_for(n, 256);
  if (elem_size == 1)
    copy2d_kernel<<<grid, 256, 0, s>>>(static_cast<const uint8_t*>(src), src_rows, src_cols,
                                       static_cast<uint8_t*>(dst), dst_rows, dst_cols);
  else if (elem_size == 2)
    copy2d_kernel<<<grid, 256, 0, s>>>(static_cast<const uint16_t*>(src), src_rows, src_cols,
                                       static_cast<uint16_t*>(dst), dst_rows, dst_cols);
  else
    copy2d_kernel<<<grid, 256, 0, s>>>(static_cast<const uint32_t*>(src), src_rows, src_cols,
                                       static_cast<uint32_t*>(dst), dst_rows, dst_cols);
  OCTET_LAUNCH_CHECK("copy2d_kernel");
}

}  // namespace octet::kernels
