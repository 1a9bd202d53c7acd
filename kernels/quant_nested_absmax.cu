// The nested absmax's device half (src/quant.cpp nest): the mean of the absmax in the fixed
// double-precision summation tree of cpu::mean_tree (so the CPU and the GPU give the same offset
// bits), and absmax - offset (kernels/quant.cuh mean_tree, sub_offset).
#include <algorithm>

#include "kernels/common.cuh"
#include "kernels/quant.cuh"

namespace octet::kernels {
namespace {

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

}  // namespace

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

}  // namespace octet::kernels
