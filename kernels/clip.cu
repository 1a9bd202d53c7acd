// CUDA kernels of the clip family: the sum of squares behind percentile_clipping, the single-block
// finish (history update, rank of the 100 squared norms, gnorm/clip/scale) and scale_by.
// Gradients are read with 16-byte loads: a scalar head up to 16-byte alignment, whole packs, a
// scalar tail (head and tail go to block 0). Each thread keeps 16 f32 accumulators (4 per
// unrolled load; f16/bf16 packs put 2 lanes into each); they are combined in f64, then across
// threads and blocks in a fixed order.
#include <cmath>

#include "kernels/clip.cuh"
#include "kernels/common.cuh"

namespace octet::kernels {
namespace {

constexpr int kThreads = 256;      // every clip kernel; the finish needs >= kHistory threads
constexpr int kUnroll = 4;         // 16-byte loads in flight per thread per iteration
constexpr int64_t kMaxBlocks = 512;  // resident in one wave on A100/H100: no tail wave
constexpr int64_t kSingleTiles = 2;  // gradients of at most this many tiles take the one-kernel path
constexpr int kHistory = 100;

template <class T> constexpr int kVec = 16 / sizeof(T);
template <class T> constexpr int64_t kTile = int64_t(kThreads) * kUnroll * kVec<T>;  // elements per block step

struct Layout {
  int64_t head, packs, tail;  // scalar elements, 16-byte packs, scalar elements
};

template <class T> Layout layout_of(const void* p, int64_t n) {
  const auto mis = static_cast<int64_t>(reinterpret_cast<uintptr_t>(p) % 16);
  int64_t head = mis ? (16 - mis) / int64_t(sizeof(T)) : 0;
  if (head > n) head = n;
  const int64_t packs = (n - head) / kVec<T>;
  return {head, packs, n - head - packs * kVec<T>};
}

template <class T> int64_t tiles_of(int64_t n) { return (n + kTile<T> - 1) / kTile<T>; }

// 16 bytes -> kVec<T> floats, and back (round to nearest even).
template <class T> __device__ __forceinline__ void unpack(const uint4& r, float* f) {
  const uint32_t w[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if constexpr (std::is_same_v<T, float>) {
      f[i] = __uint_as_float(w[i]);
    } else if constexpr (std::is_same_v<T, __half>) {
      f[2 * i] = __half2float(__ushort_as_half(static_cast<unsigned short>(w[i] & 0xffffu)));
      f[2 * i + 1] = __half2float(__ushort_as_half(static_cast<unsigned short>(w[i] >> 16)));
    } else {
      f[2 * i] = __uint_as_float(w[i] << 16);
      f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
  }
}

template <class T> __device__ __forceinline__ uint16_t bits16(float v) {
  if constexpr (std::is_same_v<T, __half>) return __half_as_ushort(__float2half_rn(v));
  else return __bfloat16_as_ushort(__float2bfloat16_rn(v));
}

template <class T> __device__ __forceinline__ uint4 pack(const float* f) {
  uint32_t w[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if constexpr (std::is_same_v<T, float>) w[i] = __float_as_uint(f[i]);
    else w[i] = uint32_t(bits16<T>(f[2 * i])) | (uint32_t(bits16<T>(f[2 * i + 1])) << 16);
  }
  return make_uint4(w[0], w[1], w[2], w[3]);
}

// Sum over the block in a fixed shuffle/shared-memory order; the result is valid in thread 0.
__device__ double block_sum(double v) {
  __shared__ double warp_sums[kThreads / 32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < kThreads / 32 ? warp_sums[lane] : 0.0;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  }
  return v;
}

// Ascending order with NaN last and ties broken by index (a total order: exactly one rank each).
__device__ __forceinline__ bool sorts_before(float a, int i, float b, int j) {
  const bool a_nan = a != a, b_nan = b != b;
  if (a_nan || b_nan) return b_nan && (!a_nan || i < j);
  return a < b || (a == b && i < j);
}

// The history entry and step a thread needs, loaded before the reduction so that their latency
// overlaps it.
struct Prefetch {
  float old;     // gnorm_vec[threadIdx.x] for threadIdx.x < kHistory
  int64_t step;
};

__device__ __forceinline__ Prefetch prefetch(const ClipStep& a) {
  return {threadIdx.x < kHistory ? a.gnorm_vec[threadIdx.x] : 0.0f, a.step_counter ? *a.step_counter : a.step};
}

// Run by a whole block; `sumsq` is valid in thread 0.
__device__ void finish(double sumsq, const Prefetch& p, const ClipStep& a) {
  __shared__ float hist[kHistory];
  __shared__ float s_sum, s_clip;
  const int tid = threadIdx.x;
  if (tid == 0) s_sum = static_cast<float>(sumsq);
  __syncthreads();
  const int64_t step = p.step;
  if (step < 1) {  // only reachable through a device step counter: no way to throw, so NaN out
    if (tid == 0) *a.gnorm = *a.clip_value = *a.scale = __int_as_float(0x7fffffff);
    return;
  }
  const int slot = static_cast<int>(step % kHistory);
  if (tid < kHistory) {
    float v = p.old;
    if (tid == slot) v = s_sum;          // cleared, then the sum added
    else if (step == 1) v = v + s_sum;   // bitsandbytes adds the first norm into every slot
    hist[tid] = v;
    if (tid == slot || step == 1) a.gnorm_vec[tid] = v;
  }
  __syncthreads();
  if (tid < kHistory) {
    const float v = hist[tid];
    int rank = 0;
    for (int j = 0; j < kHistory; ++j) rank += sorts_before(hist[j], j, v, tid);
    if (rank == a.percentile) s_clip = v;
  }
  __syncthreads();
  if (tid == 0) {
    const float gnorm = sqrtf(hist[slot]), clip = sqrtf(s_clip);
    *a.gnorm = gnorm;
    *a.clip_value = clip;
    *a.scale = gnorm > clip ? clip / gnorm : 1.0f;
    if (a.step_counter) *a.step_counter = step + 1;
  }
}

// Each block walks tiles of kThreads * kUnroll packs; with kFinish the single block goes on to
// finish, otherwise it writes its sum to partials[blockIdx.x].
template <class T, bool kFinish>
__global__ void __launch_bounds__(kThreads) sumsq_kernel(const T* x, Layout L, double* partials, ClipStep a) {
  constexpr int V = kVec<T>;
  constexpr int64_t kTilePacks = int64_t(kThreads) * kUnroll;
  const uint4* packs = reinterpret_cast<const uint4*>(x + L.head);
  Prefetch p{};
  if constexpr (kFinish) p = prefetch(a);
  const int64_t tiles = (L.packs + kTilePacks - 1) / kTilePacks;
  float acc[kUnroll][4] = {};  // 16 short f32 chains per thread (2 lanes share one for f16/bf16)
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int64_t base = tile * kTilePacks + threadIdx.x;
    uint4 r[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t i = base + int64_t(u) * kThreads;
      r[u] = i < L.packs ? __ldcs(packs + i) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      float f[V];
      unpack<T>(r[u], f);
#pragma unroll
      for (int v = 0; v < V; ++v) acc[u][v % 4] = fmaf(f[v], f[v], acc[u][v % 4]);
    }
  }
  double total = 0.0;
#pragma unroll
  for (int u = 0; u < kUnroll; ++u)
#pragma unroll
    for (int v = 0; v < 4; ++v) total += acc[u][v];
  if (blockIdx.x == 0) {
    if (threadIdx.x < L.head) {
      const float f = load_f32(x[threadIdx.x]);
      total += f * f;
    }
    if (threadIdx.x < L.tail) {
      const float f = load_f32(x[L.head + L.packs * V + threadIdx.x]);
      total += f * f;
    }
  }
  total = block_sum(total);
  if constexpr (kFinish) finish(total, p, a);
  else if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

__global__ void __launch_bounds__(kThreads) finish_kernel(const double* partials, int64_t count, ClipStep a) {
  const Prefetch p = prefetch(a);
  double v = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += kThreads) v += partials[i];
  finish(block_sum(v), p, a);
}

template <class T> __global__ void scale_kernel(T* x, Layout L, const float* scale) {
  constexpr int V = kVec<T>;
  const float s = *scale;
  if (s == 1.0f) return;  // x * 1 == x exactly: skip the traffic
  uint4* packs = reinterpret_cast<uint4*>(x + L.head);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < L.packs; i += int64_t(gridDim.x) * blockDim.x) {
    float f[V];
    unpack<T>(packs[i], f);
#pragma unroll
    for (int v = 0; v < V; ++v) f[v] *= s;
    packs[i] = pack<T>(f);
  }
  if (blockIdx.x == 0) {
    if (threadIdx.x < L.head) x[threadIdx.x] = store_f32<T>(load_f32(x[threadIdx.x]) * s);
    if (threadIdx.x < L.tail) {
      T* p = x + L.head + L.packs * V + threadIdx.x;
      *p = store_f32<T>(load_f32(*p) * s);
    }
  }
}

template <class F> void visit_grad(DType t, F&& f) {
  switch (t) {
    case DType::f32: f(type_tag<float>{}); return;
    case DType::f16: f(type_tag<__half>{}); return;
    case DType::bf16: f(type_tag<__nv_bfloat16>{}); return;
    default: fail("percentile_clipping", cat("dtype ", dtype_name(t), " is not supported here"));
  }
}

}  // namespace

int64_t clip_partials(DType t, int64_t n) {
  int64_t tiles = 0;
  visit_grad(t, [&](auto tag) { tiles = tiles_of<typename decltype(tag)::type>(n); });
  if (tiles <= kSingleTiles) return 0;
  return tiles < kMaxBlocks ? tiles : kMaxBlocks;
}

void percentile_clipping(DType t, const void* grad, int64_t n, double* partials, const ClipStep& a, cudaStream_t s) {
  const int64_t blocks = clip_partials(t, n);
  visit_grad(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const Layout L = layout_of<T>(grad, n);
    const T* x = static_cast<const T*>(grad);
    if (blocks == 0) {
      sumsq_kernel<T, true><<<1, kThreads, 0, s>>>(x, L, nullptr, a);
      OCTET_LAUNCH_CHECK("sumsq_kernel (single block)");
      return;
    }
    sumsq_kernel<T, false><<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(x, L, partials, a);
    OCTET_LAUNCH_CHECK("sumsq_kernel");
    finish_kernel<<<1, kThreads, 0, s>>>(partials, blocks, a);
    OCTET_LAUNCH_CHECK("finish_kernel");
  });
}

void scale_by(DType t, void* x, int64_t n, const float* scale, cudaStream_t s) {
  if (n == 0) return;
  visit_grad(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const Layout L = layout_of<T>(x, n);
    scale_kernel<T><<<grid_for(L.packs, kThreads), kThreads, 0, s>>>(static_cast<T*>(x), L, scale);
    OCTET_LAUNCH_CHECK("scale_kernel");
  });
}

}  // namespace octet::kernels
