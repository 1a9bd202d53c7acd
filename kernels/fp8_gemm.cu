// CUDA kernels of the fp8_gemm family: scaled casts to FP8 with a fused amax (and a fused
// transposed copy through a shared-memory tile), dequantization, the one-block scale updates of
// the scaling recipes, and a pad/crop copy for shapes cuBLASLt cannot take.
// amax is an order-free max over ordered bits (amax_bits), so it is the same on every run.
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
  __shared__ uint32_t part[32];
  const unsigned tid = threadIdx.y * blockDim.x + threadIdx.x, warps = blockDim.x * blockDim.y / 32;
  v = __reduce_max_sync(0xFFFFFFFFu, v);
  if (tid % 32 == 0) part[tid / 32] = v;
  __syncthreads();
  if (tid < 32) {
    uint32_t w = tid < warps ? part[tid] : 0u;
    w = __reduce_max_sync(0xFFFFFFFFu, w);
    if (tid == 0 && w != 0u) atomicMax(amax, w);
  }
}

// Elementwise cast, V elements (16 bytes of input) per step; the tail goes one by one.
// Without q (kStore false) only the amax is computed.
template <class In, __nv_fp8_interpretation_t F, int V, bool kStore>
__global__ void cast_kernel(const In* __restrict__ x, const float* __restrict__ scale, uint8_t* __restrict__ q,
                            int64_t n, uint32_t* amax) {
  const float s = kStore ? *scale : 1.0f;
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
      if constexpr (kStore) out.v[j] = to_fp8<F>(f * s);
    }
    if constexpr (kStore) reinterpret_cast<Vec<uint8_t, V>*>(q)[i] = out;
  }
  for (int64_t i = nv * V + tid; i < n; i += stride) {
    const float f = load_f32(x[i]);
    m = max(m, amax_bits(__float_as_uint(f)));
    if constexpr (kStore) q[i] = to_fp8<F>(f * s);
  }
  block_amax(m, amax);
}

// Cast of x (rows, cols) writing q (rows, cols) and q_t (cols, rows) through a 64x64 shared
// tile, 256 threads: each thread moves 8 consecutive elements per pass (16-byte loads of bf16,
// 8-byte FP8 stores) when `vec` (all pointers and both dims allow it), element by element
// otherwise and on partial tiles. The tile pitch of 65 bytes keeps the column reads conflict-free.
template <class In, __nv_fp8_interpretation_t F>
__global__ void __launch_bounds__(256) cast_transpose_kernel(const In* __restrict__ x, const float* __restrict__ scale,
                                                             uint8_t* __restrict__ q, uint8_t* __restrict__ q_t,
                                                             int64_t rows, int64_t cols, bool vec, uint32_t* amax) {
  __shared__ uint8_t tile[64][65];
  const float s = *scale;
  uint32_t m = 0;
  const int64_t tiles_c = (cols + 63) / 64, tiles = tiles_c * ((rows + 63) / 64);
  const int lane8 = threadIdx.x % 8, row8 = threadIdx.x / 8;  // 8 threads per 64-element line
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int64_t r0 = (t / tiles_c) * 64, c0 = (t % tiles_c) * 64;
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
          out.v[j] = to_fp8<F>(f * s);
          tile[lr][lc + j] = out.v[j];
        }
        *reinterpret_cast<Vec<uint8_t, 8>*>(q + r * cols + c) = out;
      } else {
        for (int j = 0; j < 8 && c + j < cols; ++j) {
          const float f = load_f32(x[r * cols + c + j]);
          m = max(m, amax_bits(__float_as_uint(f)));
          const uint8_t b = to_fp8<F>(f * s);
          q[r * cols + c + j] = b;
          tile[lr][lc + j] = b;
        }
      }
    }
    __syncthreads();
    for (int pass = 0; pass < 2; ++pass) {
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

void fp8_cast(DType in_t, const void* x, DType fp8, const float* scale, void* q, void* q_t, int64_t rows,
              int64_t cols, float* amax, cudaStream_t s) {
  if (amax) OCTET_CUDA_CHECK(cudaMemsetAsync(amax, 0, sizeof(float), s));
  const int64_t n = rows * cols;
  if (n == 0) return;
  auto* amax_u = reinterpret_cast<uint32_t*>(amax);
  auto* q8 = static_cast<uint8_t*>(q);
  visit_float(in_t, "cast_to_fp8", [&](auto tag) {
    using In = typename decltype(tag)::type;
    const In* in = static_cast<const In*>(x);
    with_format(fp8, [&](auto format) {
      constexpr __nv_fp8_interpretation_t F = decltype(format)::value;
      if (q_t) {
        const int64_t tiles = ((rows + 63) / 64) * ((cols + 63) / 64);
        const unsigned grid = static_cast<unsigned>(tiles < 65535 ? tiles : 65535);
        const bool vec = cols % 8 == 0 && rows % 8 == 0 && reinterpret_cast<uintptr_t>(x) % (8 * sizeof(In)) == 0 &&
                         reinterpret_cast<uintptr_t>(q) % 8 == 0 && reinterpret_cast<uintptr_t>(q_t) % 8 == 0;
        cast_transpose_kernel<In, F><<<grid, 256, 0, s>>>(in, scale, q8, static_cast<uint8_t*>(q_t), rows, cols, vec,
                                                          amax_u);
        OCTET_LAUNCH_CHECK("cast_transpose_kernel");
        return;
      }
      constexpr int V = 16 / sizeof(In);
      const bool vec = reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(q) % V == 0;
      const unsigned grid = grid_for(vec ? n / V : n, 256);
      if (q == nullptr && vec) cast_kernel<In, F, V, false><<<grid, 256, 0, s>>>(in, scale, q8, n, amax_u);
      else if (q == nullptr) cast_kernel<In, F, 1, false><<<grid, 256, 0, s>>>(in, scale, q8, n, amax_u);
      else if (vec) cast_kernel<In, F, V, true><<<grid, 256, 0, s>>>(in, scale, q8, n, amax_u);
      else cast_kernel<In, F, 1, true><<<grid, 256, 0, s>>>(in, scale, q8, n, amax_u);
      OCTET_LAUNCH_CHECK("cast_kernel");
    });
  });
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
