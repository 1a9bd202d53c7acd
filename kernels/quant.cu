// CUDA kernels of the quant family: blockwise and global quantize (optionally fused with the
// dequantize: fake-quantize), the global absmax reduction, dequantize, nested-absmax helpers.
// Layout: persistent blocks of 256 threads walk tiles of 4096 elements; in a tile each warp
// owns 512 consecutive elements as rows of 16-byte vectors (lane l of row j holds elements
// j*32*V + l*V .. +V), so every load and store of a warp is contiguous. A quantization block
// (32..4096 elements) never straddles a tile. The code table, its midpoints and the index LUT
// (kernels/quant_index.cuh) live in shared memory, loaded once per CUDA block.
// Float arithmetic uses explicit _rn intrinsics: no contraction, no flush-to-zero.
#include <algorithm>

#include "kernels/common.cuh"
#include "kernels/quant.cuh"

namespace octet::kernels {
namespace {
namespace qi = quant_index;

constexpr int kThreads = 256;
constexpr int kPerThread = 16;
constexpr int kWarpTile = 32 * kPerThread;    // 512
constexpr int kTile = kThreads * kPerThread;  // 4096, the largest blocksize
constexpr unsigned kFull = 0xffffffffu;

template <class T>
constexpr int vec_width() {
  return 16 / static_cast<int>(sizeof(T));
}

// V elements from e on as floats; elements at or past n read as 0.
template <class T, int V>
__device__ __forceinline__ void load_vec(const T* __restrict__ p, int64_t e, int64_t n, bool aligned, float (&v)[V]) {
  if (aligned && e + V <= n) {
    union {
      uint4 raw;
      T t[V];
    } u;
    u.raw = __ldcs(reinterpret_cast<const uint4*>(p + e));  // read once: streaming
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

// Copies the index tables to shared memory; returns them.
__device__ __forceinline__ const qi::Tables& load_index(uint4* smem, const uint4* __restrict__ index, int words) {
  for (int i = threadIdx.x; i < words; i += blockDim.x) smem[i] = index[i];
  __syncthreads();
  return *reinterpret_cast<const qi::Tables*>(smem);
}

// m[j]: |max| of vector row j of this lane. On return m[j] is the absmax of the quantization
// block that holds row j's vector: shuffles inside a row, registers across rows, shared memory
// across warps.
template <int B, int V, int J>
__device__ __forceinline__ void block_absmax(float (&m)[J], float* warp_max) {
  constexpr int kLanes = B / V;  // lanes a block covers in one row
  if constexpr (kLanes <= 32) {
#pragma unroll
    for (int off = 1; off < kLanes; off <<= 1)
#pragma unroll
      for (int j = 0; j < J; ++j) m[j] = fmaxf(m[j], __shfl_xor_sync(kFull, m[j], off));
  } else {
#pragma unroll
    for (int off = 1; off < 32; off <<= 1)
#pragma unroll
      for (int j = 0; j < J; ++j) m[j] = fmaxf(m[j], __shfl_xor_sync(kFull, m[j], off));
    constexpr int kRows = kLanes / 32;  // consecutive rows per block
    if constexpr (kRows <= J) {
#pragma unroll
      for (int g = 0; g < J; g += kRows) {
        float r = 0.0f;
#pragma unroll
        for (int k = 0; k < kRows; ++k) r = fmaxf(r, m[g + k]);
#pragma unroll
        for (int k = 0; k < kRows; ++k) m[g + k] = r;
      }
    } else {
      constexpr int kWarps = kRows / J;  // consecutive warps per block
      float r = 0.0f;
#pragma unroll
      for (int j = 0; j < J; ++j) r = fmaxf(r, m[j]);
      const int warp = threadIdx.x >> 5;
      __syncthreads();  // the previous tile's reads of warp_max are done
      if ((threadIdx.x & 31) == 0) warp_max[warp] = r;
      __syncthreads();
      r = 0.0f;
#pragma unroll
      for (int k = 0; k < kWarps; ++k) r = fmaxf(r, warp_max[warp / kWarps * kWarps + k]);
#pragma unroll
      for (int j = 0; j < J; ++j) m[j] = r;
    }
  }
}

// B > 0: blockwise (absmax per block, written to absmax); B == 0: global (absmax read from
// *absmax). fake != nullptr: also writes code[q] * absmax in T.
template <class T, int B>
__global__ void __launch_bounds__(kThreads)
    quantize_kernel(const T* __restrict__ A, int64_t n, const uint4* __restrict__ index, int index_words,
                    qi::LutShape shape, float* __restrict__ absmax, uint8_t* __restrict__ codes, T* __restrict__ fake,
                    bool aligned) {
  extern __shared__ uint4 smem[];
  __shared__ float warp_max[kThreads / 32];
  const qi::Tables& tab = load_index(smem, index, index_words);
  const qi::LutEntry* lut = reinterpret_cast<const qi::LutEntry*>(&tab + 1);
  constexpr int V = vec_width<T>(), J = kPerThread / V;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const float global_absmax = B == 0 ? *absmax : 0.0f;
  const int64_t tiles = (n + kTile - 1) / kTile;
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int64_t base = tile * kTile + warp * kWarpTile + lane * V;
    float v[J][V], m[J];
#pragma unroll
    for (int j = 0; j < J; ++j) load_vec<T, V>(A, base + j * 32 * V, n, aligned, v[j]);
    if constexpr (B > 0) {
#pragma unroll
      for (int j = 0; j < J; ++j) {
        m[j] = 0.0f;  // fmaxf ignores NaN
#pragma unroll
        for (int q = 0; q < V; ++q) m[j] = fmaxf(m[j], fabsf(v[j][q]));
      }
      block_absmax<B, V, J>(m, warp_max);
    }
#pragma unroll
    for (int j = 0; j < J; ++j) {
      const int64_t e = base + j * 32 * V;
      CodeVec<V> c;
      float y[V];
      if constexpr (B > 0) {
        if (e < n && (e & (B - 1)) == 0) absmax[e / B] = m[j];
        const qi::Scale sc = qi::block_scale(m[j]);
#pragma unroll
        for (int q = 0; q < V; ++q)
          c.c[q] = static_cast<uint8_t>(qi::lut_index(lut, shape, tab, qi::block_x(v[j][q], sc)));
      } else {
        m[j] = global_absmax;
#pragma unroll
        for (int q = 0; q < V; ++q)
          c.c[q] = static_cast<uint8_t>(qi::lut_index(lut, shape, tab, qi::global_x(v[j][q], global_absmax)));
      }
      if (codes) store_codes<V>(codes, e, n, aligned, c);  // null: fake-quantize only
      if (fake) {
#pragma unroll
        for (int q = 0; q < V; ++q) y[q] = __fmul_rn(tab.code[c.c[q]], m[j]);
        store_vec<T, V>(fake, e, n, aligned, y);
      }
    }
  }
}

// Max of |A| as float bits (NaN canonical, above Inf): per-thread, warp redux, one atomicMax per
// block. Max is order-free, so the result is deterministic.
template <class T>
__global__ void __launch_bounds__(kThreads)
    absmax_kernel(const T* __restrict__ A, int64_t n, unsigned* out, bool aligned) {
  constexpr int V = vec_width<T>(), J = kPerThread / V;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  unsigned m = 0;
  const int64_t tiles = (n + kTile - 1) / kTile;
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int64_t base = tile * kTile + warp * kWarpTile + lane * V;
    float v[J][V];
#pragma unroll
    for (int j = 0; j < J; ++j) load_vec<T, V>(A, base + j * 32 * V, n, aligned, v[j]);
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
    atomicMax(out, m);
  }
}

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
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t tiles = (n + kTile - 1) / kTile;
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int64_t base = tile * kTile + warp * kWarpTile + lane * V;
    CodeVec<V> c[J];
    float am[J];
#pragma unroll
    for (int j = 0; j < J; ++j) {
      const int64_t e = base + j * 32 * V;
      c[j] = load_codes<V>(codes, e, n, aligned);
      am[j] = e < n ? __ldg(absmax + (e >> log2b)) : 0.0f;  // a vector never straddles blocks
    }
#pragma unroll
    for (int j = 0; j < J; ++j) {
      float y[V];
#pragma unroll
      for (int q = 0; q < V; ++q) {
        y[q] = __fmul_rn(tab[c[j].c[q]], am[j]);
        if (offset) y[q] = __fadd_rn(y[q], off);
      }
      store_vec<To, V>(out, base + j * 32 * V, n, aligned, y);
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

__global__ void index_check_kernel(const uint4* __restrict__ index, int words, qi::LutShape shape,
                                   unsigned long long* bad) {
  extern __shared__ uint4 smem[];
  const qi::Tables& tab = load_index(smem, index, words);
  const qi::LutEntry* lut = reinterpret_cast<const qi::LutEntry*>(&tab + 1);
  unsigned long long local = 0;
  const uint64_t stride = uint64_t(gridDim.x) * blockDim.x;
  for (uint64_t i = blockIdx.x * uint64_t(blockDim.x) + threadIdx.x; i < (uint64_t{1} << 32); i += stride) {
    const float x = __uint_as_float(static_cast<uint32_t>(i));
    local += qi::lut_index(lut, shape, tab, x) != qi::closed_form(tab.code, tab.mid, x);
  }
  atomicAdd(bad, local);
}

template <class K>
unsigned persistent_grid(K kernel, size_t smem, int64_t tiles) {
  int dev = 0, sms = 0, per_sm = 0;
  OCTET_CUDA_CHECK(cudaGetDevice(&dev));
  OCTET_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  OCTET_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem));
  return static_cast<unsigned>(std::min<int64_t>(tiles, int64_t{sms} * std::max(per_sm, 1)));
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

template <class T, int B>
void launch_quantize(const T* A, int64_t n, const QuantIndex& q, float* absmax, uint8_t* codes, T* fake,
                     cudaStream_t s) {
  const auto kernel = quantize_kernel<T, B>;
  const size_t smem = static_cast<size_t>(q.bytes);
  const bool aligned = aligned16(A) && aligned16(codes) && (!fake || aligned16(fake));
  const unsigned grid = persistent_grid(kernel, smem, (n + kTile - 1) / kTile);
  kernel<<<grid, kThreads, smem, s>>>(A, n, static_cast<const uint4*>(q.data), q.bytes / 16, q.shape, absmax, codes,
                                      fake, aligned);
  OCTET_LAUNCH_CHECK("quantize_kernel");
}

}  // namespace

void quantize_blockwise(DType t, const void* A, int64_t n, const QuantIndex& q, int64_t blocksize, float* absmax,
                        uint8_t* codes, void* fake_out, cudaStream_t s) {
  if (n == 0) return;
  visit_quant(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* a = static_cast<const T*>(A);
    T* f = static_cast<T*>(fake_out);
    switch (blocksize) {
      case 32:
        return launch_quantize<T, 32>(a, n, q, absmax, codes, f, s);
      case 64:
        return launch_quantize<T, 64>(a, n, q, absmax, codes, f, s);
      case 128:
        return launch_quantize<T, 128>(a, n, q, absmax, codes, f, s);
      case 256:
        return launch_quantize<T, 256>(a, n, q, absmax, codes, f, s);
      case 512:
        return launch_quantize<T, 512>(a, n, q, absmax, codes, f, s);
      case 1024:
        return launch_quantize<T, 1024>(a, n, q, absmax, codes, f, s);
      case 2048:
        return launch_quantize<T, 2048>(a, n, q, absmax, codes, f, s);
      case 4096:
        return launch_quantize<T, 4096>(a, n, q, absmax, codes, f, s);
      default:
        fail("quantize_blockwise", cat("blocksize ", blocksize, " reached the kernels"));
    }
  });
}

void absmax_global(DType t, const void* A, int64_t n, float* absmax, cudaStream_t s) {
  OCTET_CUDA_CHECK(cudaMemsetAsync(absmax, 0, sizeof(float), s));
  if (n == 0) return;
  visit_quant(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const auto kernel = absmax_kernel<T>;
    const unsigned grid = persistent_grid(kernel, 0, (n + kTile - 1) / kTile);
    kernel<<<grid, kThreads, 0, s>>>(static_cast<const T*>(A), n, reinterpret_cast<unsigned*>(absmax), aligned16(A));
    OCTET_LAUNCH_CHECK("absmax_kernel");
  });
}

void quantize_global(DType t, const void* A, int64_t n, const QuantIndex& q, const float* absmax, uint8_t* codes,
                     void* fake_out, cudaStream_t s) {
  if (n == 0) return;
  visit_quant(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_quantize<T, 0>(static_cast<const T*>(A), n, q, const_cast<float*>(absmax), codes, static_cast<T*>(fake_out),
                          s);
  });
}

void dequantize(const uint8_t* codes, int64_t n, const float* code, const float* absmax, int log2_blocksize,
                const float* offset, DType out_t, void* out, cudaStream_t s) {
  if (n == 0) return;
  visit_quant(out_t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const auto kernel = dequantize_kernel<T>;
    const unsigned grid = persistent_grid(kernel, 0, (n + kTile - 1) / kTile);
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

uint64_t index_mismatches(const QuantIndex& q, cudaStream_t s) {
  unsigned long long* bad = nullptr;
  OCTET_CUDA_CHECK(cudaMallocAsync(&bad, sizeof *bad, s));
  OCTET_CUDA_CHECK(cudaMemsetAsync(bad, 0, sizeof *bad, s));
  int dev = 0, sms = 0;
  OCTET_CUDA_CHECK(cudaGetDevice(&dev));
  OCTET_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  index_check_kernel<<<sms * 8, kThreads, q.bytes, s>>>(static_cast<const uint4*>(q.data), q.bytes / 16, q.shape, bad);
  OCTET_LAUNCH_CHECK("index_check_kernel");
  unsigned long long host = 0;
  OCTET_CUDA_CHECK(cudaMemcpyAsync(&host, bad, sizeof host, cudaMemcpyDeviceToHost, s));
  OCTET_CUDA_CHECK(cudaFreeAsync(bad, s));
  OCTET_CUDA_CHECK(cudaStreamSynchronize(s));
  return host;
}

}  // namespace octet::kernels
