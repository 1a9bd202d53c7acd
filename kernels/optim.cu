// CUDA kernels of the optim family (launchers declared in kernels/optim.cuh). A batch of up to
// kOptimSlots tensors travels as one __grid_constant__ kernel parameter; CUDA block i finds its
// tensor by a binary search over the batch's cumulative chunk counts and updates 1024 elements,
// 4 consecutive ones per thread (16-byte accesses for f32 where the slot allows). The arithmetic
// is kernels/optim_math.cuh, as on the CPU. The 8-bit kernel keeps both code tables and their
// midpoints and their compact index tables (36 KiB) in shared memory and finds indices with
// quant_index::compact_index, which gives closed_form's index (the CPU's rule) with one lookup, so
// the codes are those of quantize_blockwise on every device; its blocks stride over the chunks
// (one resident wave) so that each loads the tables once.
#include <algorithm>
#include <climits>
#include <mutex>
#include <utility>
#include <vector>

#include "kernels/common.cuh"
#include "kernels/optim.cuh"

namespace octet::kernels {
namespace {

namespace om = optim_math;
namespace qi = quant_index;

constexpr int kThreads = 256;
static_assert(kOptimChunk == 4 * kThreads, "4 elements per thread");
static_assert(kOptimBlock % 4 == 0 && kOptimChunk % kOptimBlock == 0, "quantization blocks inside chunks");

struct Batch {
  int32_t count = 0;
  int64_t chunk_end[kOptimSlots];  // cumulative chunks of slots 0 .. k
  OptimSlot slot[kOptimSlots];
};
static_assert(sizeof(Batch) <= 32764, "kernel parameter limit");

__device__ __forceinline__ int find_slot(const Batch& b, int64_t chunk) {
  int lo = 0, hi = b.count - 1;
  while (lo < hi) {
    const int mid = (lo + hi) >> 1;
    if (b.chunk_end[mid] > chunk)
      hi = mid;
    else
      lo = mid + 1;
  }
  return lo;
}

// Element index of this thread's first element of `chunk` (of the batch) within slot k's tensor.
__device__ __forceinline__ int64_t first_element(const Batch& b, int k, int64_t chunk) {
  const int64_t first_chunk = k ? b.chunk_end[k - 1] : 0;
  return (chunk - first_chunk) * kOptimChunk + 4 * static_cast<int64_t>(threadIdx.x);
}

template <class T>
struct Vec4 {
  struct alignas(4 * sizeof(T)) type {
    T e[4];
  };
};

template <class T>
__device__ __forceinline__ void load4(const void* base, int64_t i, int64_t n, bool vec, float (&out)[4]) {
  const T* p = static_cast<const T*>(base) + i;
  if (vec && i + 4 <= n) {
    const typename Vec4<T>::type v = *reinterpret_cast<const typename Vec4<T>::type*>(p);
#pragma unroll
    for (int k = 0; k < 4; ++k) out[k] = load_f32(v.e[k]);
  } else {
#pragma unroll
    for (int k = 0; k < 4; ++k) out[k] = i + k < n ? load_f32(p[k]) : 0.0f;
  }
}

template <class T>
__device__ __forceinline__ void store4(void* base, int64_t i, int64_t n, bool vec, const float (&in)[4]) {
  T* p = static_cast<T*>(base) + i;
  if (vec && i + 4 <= n) {
    typename Vec4<T>::type v;
#pragma unroll
    for (int k = 0; k < 4; ++k) v.e[k] = store_f32<T>(in[k]);
    *reinterpret_cast<typename Vec4<T>::type*>(p) = v;
  } else {
#pragma unroll
    for (int k = 0; k < 4; ++k)
      if (i + k < n) p[k] = store_f32<T>(in[k]);
  }
}

__device__ __forceinline__ void load_codes(const void* base, int64_t i, int64_t n, bool vec, uint8_t (&out)[4]) {
  const uint8_t* p = static_cast<const uint8_t*>(base) + i;
  if (vec && i + 4 <= n) {
    const uint32_t w = *reinterpret_cast<const uint32_t*>(p);
#pragma unroll
    for (int k = 0; k < 4; ++k) out[k] = static_cast<uint8_t>(w >> (8 * k));
  } else {
#pragma unroll
    for (int k = 0; k < 4; ++k) out[k] = i + k < n ? p[k] : 0;
  }
}

__device__ __forceinline__ void store_codes(void* base, int64_t i, int64_t n, bool vec, const uint32_t (&in)[4]) {
  uint8_t* p = static_cast<uint8_t*>(base) + i;
  if (vec && i + 4 <= n) {
    *reinterpret_cast<uint32_t*>(p) = (in[0] & 0xFF) | (in[1] & 0xFF) << 8 | (in[2] & 0xFF) << 16 | in[3] << 24;
  } else {
#pragma unroll
    for (int k = 0; k < 4; ++k)
      if (i + k < n) p[k] = static_cast<uint8_t>(in[k]);
  }
}

__global__ void advance_kernel(const __grid_constant__ Batch b, bool eightbit) {
  const int k = static_cast<int>(threadIdx.x);
  if (k >= b.count) return;
  om::StepState* st = b.slot[k].step_state;
  const int64_t t = st->step + 1;
  st->step = t;
  st->scalars = eightbit ? om::step_scalars_8bit(b.slot[k].hyper, t) : om::step_scalars(b.slot[k].hyper, t);
}

template <OptimKind K, class P, class S>
__global__ void __launch_bounds__(kThreads) update_kernel(const __grid_constant__ Batch b) {
  const int k = find_slot(b, blockIdx.x);
  const OptimSlot& s = b.slot[k];
  const int64_t i = first_element(b, k, blockIdx.x);
  if (i >= s.numel) return;
  const om::StepScalars sc = s.step_state->scalars;
  const float scale = s.gnorm_scale ? *s.gnorm_scale : 1.0f;
  const bool vec = s.vector_ok;
  float p[4], g[4], m[4], v[4];
  load4<P>(s.param, i, s.numel, vec, p);
  load4<P>(s.grad, i, s.numel, vec, g);
  if constexpr (K == OptimKind::sgd) {
    const bool momentum = s.state1 && sc.momentum != 0.0f;
    if (momentum) load4<float>(s.state1, i, s.numel, vec, m);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const om::Sgd r = om::sgd_update(p[j], g[j], momentum ? m[j] : 0.0f, scale, momentum, sc);
      p[j] = r.p;
      m[j] = r.buf;
    }
    store4<P>(s.param, i, s.numel, vec, p);
    if (momentum) store4<float>(s.state1, i, s.numel, vec, m);
  } else {
    load4<S>(s.state1, i, s.numel, vec, m);
    load4<S>(s.state2, i, s.numel, vec, v);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const om::Adam r = K == OptimKind::adamw ? om::adamw_update(p[j], g[j], m[j], v[j], scale, sc)
                                               : om::adamw8bit_update(p[j], g[j], m[j], v[j], scale, sc);
      p[j] = r.p;
      m[j] = r.m;
      v[j] = r.v;
    }
    store4<P>(s.param, i, s.numel, vec, p);
    store4<S>(s.state1, i, s.numel, vec, m);
    store4<S>(s.state2, i, s.numel, vec, v);
  }
}

// max(a, b) ignoring NaN (as quantize_blockwise's absmax: a comparison with NaN is false).
__device__ __forceinline__ float max_ignoring_nan(float a, float b) { return b > a ? b : a; }

// The index of x in a code: the compact table (C) or closed_form; both give closed_form's index.
// x is clamped to [floor, hi] first (NaN -> floor, index 0), the compact table's domain; the
// kernel's x never exceeds hi = 1 + 2^-23 (|v| <= absmax), the clamp only keeps reads in bounds.
template <bool C>
__device__ __forceinline__ uint32_t index_of(const qi::Tables& t, const uint32_t* ct, const qi::Compact& c, float x) {
  if constexpr (C)
    return qi::compact_index(ct, c, fminf(fmaxf(x, c.floor), c.hi)) & 0xFFu;
  else
    return static_cast<uint32_t>(qi::closed_form(t.code, t.mid, x));
}

// One chunk of an 8-bit slot: dequantize, update, new per-block absmax, requantize.
template <class P, bool C>
__device__ __forceinline__ void blockwise_chunk(const Batch& b, int64_t chunk, const OptimTables& tab,
                                                const uint32_t* ct_m, const uint32_t* ct_v, const OptimIndex& index,
                                                float (&warp_max)[2][kThreads / 32]) {
  constexpr int kWarpsPerBlock = static_cast<int>(kOptimBlock / 4 / 32);
  const int k = find_slot(b, chunk);
  const OptimSlot& s = b.slot[k];
  const int64_t i = first_element(b, k, chunk), n = s.numel;
  const bool vec = s.vector_ok, live = i < n;
  const int64_t block = i / kOptimBlock;
  float p[4], g[4], m[4], v[4];
  float max_m = 0.0f, max_v = 0.0f;
  if (live) {
    const om::StepScalars sc = s.step_state->scalars;
    const float scale = s.gnorm_scale ? *s.gnorm_scale : 1.0f;
    uint8_t cm[4], cv[4];
    load4<P>(s.param, i, n, vec, p);
    load4<P>(s.grad, i, n, vec, g);
    load_codes(s.state1, i, n, vec, cm);
    load_codes(s.state2, i, n, vec, cv);
    const float absmax_m = s.absmax1[block], absmax_v = s.absmax2[block];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const om::Adam r = om::adamw8bit_update(p[j], g[j], qi::mul_nan(tab.m.code[cm[j]], absmax_m),
                                              qi::mul_nan(tab.v.code[cv[j]], absmax_v), scale, sc);
      p[j] = r.p;
      m[j] = r.m;
      v[j] = r.v;
      if (i + j < n) {
        max_m = max_ignoring_nan(max_m, fabsf(r.m));
        max_v = max_ignoring_nan(max_v, fabsf(r.v));
      }
    }
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    max_m = max_ignoring_nan(max_m, __shfl_xor_sync(0xFFFFFFFFu, max_m, off));
    max_v = max_ignoring_nan(max_v, __shfl_xor_sync(0xFFFFFFFFu, max_v, off));
  }
  const int warp = threadIdx.x / 32;
  if (threadIdx.x % 32 == 0) {
    warp_max[0][warp] = max_m;
    warp_max[1][warp] = max_v;
  }
  __syncthreads();  // every thread has read the old absmax and published its maximum
  float new_m = 0.0f, new_v = 0.0f;
  const int first_warp = warp / kWarpsPerBlock * kWarpsPerBlock;
#pragma unroll
  for (int w = 0; w < kWarpsPerBlock; ++w) {
    new_m = max_ignoring_nan(new_m, warp_max[0][first_warp + w]);
    new_v = max_ignoring_nan(new_v, warp_max[1][first_warp + w]);
  }
  __syncthreads();  // warp_max is free for the next chunk
  if (!live) return;
  if (i % kOptimBlock == 0) {
    s.absmax1[block] = new_m;
    s.absmax2[block] = new_v;
  }
  const qi::Scale scale_m = qi::block_scale(new_m), scale_v = qi::block_scale(new_v);
  uint32_t qm[4], qv[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    qm[j] = index_of<C>(tab.m, ct_m, index.m, qi::block_x(m[j], scale_m));
    qv[j] = index_of<C>(tab.v, ct_v, index.v, qi::block_x(v[j], scale_v));
  }
  store4<P>(s.param, i, n, vec, p);
  store_codes(s.state1, i, n, vec, qm);
  store_codes(s.state2, i, n, vec, qv);
}

// A grid of a few blocks per SM strides over the chunks, so each block loads the tables once:
// dynamic shared memory holds OptimTables, then (C) the two compact tables.
template <class P, bool C>
__global__ void __launch_bounds__(kThreads)
    blockwise_kernel(const __grid_constant__ Batch b, int64_t chunks, const __grid_constant__ OptimIndex index) {
  extern __shared__ uint4 optim_smem[];
  __shared__ float warp_max[2][kThreads / 32];
  static_assert(sizeof(OptimTables) % 16 == 0, "tables copied in 16-byte words");
  constexpr int kTableWords = static_cast<int>(sizeof(OptimTables) / 16);
  const int m_words = C ? index.m_words / 4 : 0, v_words = C ? index.v_words / 4 : 0;
  for (int w = threadIdx.x; w < kTableWords; w += kThreads)
    optim_smem[w] = reinterpret_cast<const uint4*>(index.tables)[w];
  for (int w = threadIdx.x; w < m_words; w += kThreads)
    optim_smem[kTableWords + w] = reinterpret_cast<const uint4*>(index.m_entries)[w];
  for (int w = threadIdx.x; w < v_words; w += kThreads)
    optim_smem[kTableWords + m_words + w] = reinterpret_cast<const uint4*>(index.v_entries)[w];
  __syncthreads();
  const auto& tab = *reinterpret_cast<const OptimTables*>(optim_smem);
  const auto* ct_m = reinterpret_cast<const uint32_t*>(optim_smem + kTableWords);
  const auto* ct_v = reinterpret_cast<const uint32_t*>(optim_smem + kTableWords + m_words);
  for (int64_t chunk = blockIdx.x; chunk < chunks; chunk += gridDim.x)
    blockwise_chunk<P, C>(b, chunk, tab, ct_m, ct_v, index, warp_max);
}

// Dynamic shared memory of the 8-bit kernel.
size_t blockwise_smem(const OptimIndex& index) {
  return sizeof(OptimTables) + (index.m.entries > 0 ? 4 * size_t(index.m_words + index.v_words) : 0);
}

// Blocks of the 8-bit kernel: as many as fit on the device at once, at most one per chunk.
template <class P, bool C>
unsigned blockwise_grid(int64_t chunks, size_t smem) {
  static std::mutex mutex;
  static std::vector<std::pair<std::pair<int, size_t>, int>> seen;  // (device, smem) -> blocks
  int dev = 0;
  OCTET_CUDA_CHECK(cudaGetDevice(&dev));
  int blocks = 0;
  {
    std::lock_guard lock(mutex);
    for (const auto& [key, count] : seen)
      if (key.first == dev && key.second == smem) blocks = count;
  }
  if (blocks == 0) {
    int sms = 0, per_sm = 0;
    OCTET_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    OCTET_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, blockwise_kernel<P, C>, kThreads, smem));
    blocks = sms * std::max(per_sm, 1);
    std::lock_guard lock(mutex);
    seen.push_back({{dev, smem}, blocks});
  }
  return static_cast<unsigned>(std::min<int64_t>(chunks, blocks));
}

template <class P>
void launch_blockwise(const Batch& b, unsigned chunks, const OptimIndex& index, cudaStream_t s) {
  const size_t smem = blockwise_smem(index);
  if (index.m.entries > 0)
    blockwise_kernel<P, true><<<blockwise_grid<P, true>(chunks, smem), kThreads, smem, s>>>(b, chunks, index);
  else
    blockwise_kernel<P, false><<<blockwise_grid<P, false>(chunks, smem), kThreads, smem, s>>>(b, chunks, index);
}

// Halving tree over kThreads lanes in shared memory; the sum ends in lane[0].
__device__ __forceinline__ void tree_sum(double* lane) {
  for (int half = kThreads / 2; half > 0; half >>= 1) {
    __syncthreads();
    if (static_cast<int>(threadIdx.x) < half)
      lane[threadIdx.x] = __dadd_rn(lane[threadIdx.x], lane[threadIdx.x + half]);
  }
  __syncthreads();
}

template <class T>
__global__ void __launch_bounds__(kThreads) sumsq_kernel(const __grid_constant__ Batch b, double* partials) {
  __shared__ double lane[kThreads];
  const int k = find_slot(b, blockIdx.x);
  const int64_t i = first_element(b, k, blockIdx.x), n = b.slot[k].numel;
  const T* x = static_cast<const T*>(b.slot[k].grad);
  double acc = 0.0;
#pragma unroll
  for (int j = 0; j < 4; ++j)
    if (i + j < n) {
      const double e = load_f32(x[i + j]);
      acc = __dadd_rn(acc, __dmul_rn(e, e));
    }
  lane[threadIdx.x] = acc;
  tree_sum(lane);
  if (threadIdx.x == 0) partials[blockIdx.x] = lane[0];
}

__global__ void __launch_bounds__(kThreads)
    norm_finish_kernel(const double* partials, int64_t count, float max_norm, float* out) {
  __shared__ double lane[kThreads];
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += kThreads) acc = __dadd_rn(acc, partials[i]);
  lane[threadIdx.x] = acc;
  tree_sum(lane);
  if (threadIdx.x != 0) return;
  const float norm = __double2float_rn(__dsqrt_rn(lane[0]));
  float coef = om::fdiv(max_norm, om::fadd(norm, 1e-6f));
  if (coef > 1.0f) coef = 1.0f;
  out[0] = norm;
  out[1] = coef;
}

template <class T>
__global__ void __launch_bounds__(kThreads) scale_kernel(const __grid_constant__ Batch b, const float* coef) {
  const float c = *coef;
  if (c == 1.0f) return;
  const int k = find_slot(b, blockIdx.x);
  const int64_t i = first_element(b, k, blockIdx.x), n = b.slot[k].numel;
  T* x = static_cast<T*>(const_cast<void*>(b.slot[k].grad));
#pragma unroll
  for (int j = 0; j < 4; ++j)
    if (i + j < n) x[i + j] = store_f32<T>(om::fmul(load_f32(x[i + j]), c));
}

__global__ void write_hyper_kernel(double* dst, HyperValues values) {
  if (threadIdx.x != 0) return;
#pragma unroll
  for (int k = 0; k < om::kHyperCount; ++k) dst[k] = values.v[k];  // constant indices: no local copy
}

// Batches of kOptimSlots slots with their chunk counts; f(batch, chunks) for each.
template <class F>
void for_each_batch(const OptimSlot* slots, int64_t count, F&& f) {
  Batch b;
  for (int64_t first = 0; first < count; first += kOptimSlots) {
    b.count = static_cast<int32_t>(std::min<int64_t>(kOptimSlots, count - first));
    int64_t chunks = 0;
    for (int k = 0; k < b.count; ++k) {
      b.slot[k] = slots[first + k];
      chunks += chunks_of(b.slot[k].numel);
      b.chunk_end[k] = chunks;
    }
    if (chunks > INT_MAX) fail("optim", cat("a batch of ", chunks, " chunks is beyond the grid limit"));
    f(b, static_cast<unsigned>(chunks));
  }
}

template <class F>
void visit_param(DType t, F&& f) {
  switch (t) {
    case DType::f32:
      return f(type_tag<float>{});
    case DType::f16:
      return f(type_tag<__half>{});
    case DType::bf16:
      return f(type_tag<__nv_bfloat16>{});
    default:
      fail("optim", cat("dtype ", dtype_name(t), " is not supported here"));
  }
}

}  // namespace

void optim_step(OptimKind kind, DType param_dtype, DType state_dtype, const OptimSlot* slots, int64_t count,
                const OptimIndex& index, cudaStream_t s) {
  const bool eightbit = kind == OptimKind::adamw8bit_f32 || kind == OptimKind::adamw8bit_blockwise;
  for_each_batch(slots, count, [&](const Batch& b, unsigned chunks) {
    advance_kernel<<<1, kOptimSlots, 0, s>>>(b, eightbit);
    OCTET_LAUNCH_CHECK("optim advance_kernel");
    if (chunks == 0) return;
    visit_param(param_dtype, [&](auto tag) {
      using P = typename decltype(tag)::type;
      switch (kind) {
        case OptimKind::sgd:
          update_kernel<OptimKind::sgd, P, float><<<chunks, kThreads, 0, s>>>(b);
          break;
        case OptimKind::adamw:
          if (state_dtype == DType::bf16)
            update_kernel<OptimKind::adamw, P, __nv_bfloat16><<<chunks, kThreads, 0, s>>>(b);
          else
            update_kernel<OptimKind::adamw, P, float><<<chunks, kThreads, 0, s>>>(b);
          break;
        case OptimKind::adamw8bit_f32:
          update_kernel<OptimKind::adamw8bit_f32, P, float><<<chunks, kThreads, 0, s>>>(b);
          break;
        case OptimKind::adamw8bit_blockwise:
          launch_blockwise<P>(b, chunks, index, s);
          break;
      }
      OCTET_LAUNCH_CHECK("optim update kernel");
    });
  });
}

void grad_sumsq(DType grad_dtype, const OptimSlot* slots, int64_t count, double* partials, cudaStream_t s) {
  for_each_batch(slots, count, [&](const Batch& b, unsigned chunks) {
    if (chunks == 0) return;
    visit_param(grad_dtype, [&](auto tag) {
      using T = typename decltype(tag)::type;
      sumsq_kernel<T><<<chunks, kThreads, 0, s>>>(b, partials);
      OCTET_LAUNCH_CHECK("clip_grad_norm_ sumsq_kernel");
    });
    partials += chunks;
  });
}

void grad_norm_finish(const double* partials, int64_t count, float max_norm, float* out, cudaStream_t s) {
  norm_finish_kernel<<<1, kThreads, 0, s>>>(partials, count, max_norm, out);
  OCTET_LAUNCH_CHECK("clip_grad_norm_ norm_finish_kernel");
}

void grad_scale(DType grad_dtype, const OptimSlot* slots, int64_t count, const float* coef, cudaStream_t s) {
  for_each_batch(slots, count, [&](const Batch& b, unsigned chunks) {
    if (chunks == 0) return;
    visit_param(grad_dtype, [&](auto tag) {
      using T = typename decltype(tag)::type;
      scale_kernel<T><<<chunks, kThreads, 0, s>>>(b, coef);
      OCTET_LAUNCH_CHECK("clip_grad_norm_ scale_kernel");
    });
  });
}

void write_hyper(double* dst, const HyperValues& values, cudaStream_t s) {
  write_hyper_kernel<<<1, 1, 0, s>>>(dst, values);
  OCTET_LAUNCH_CHECK("optim write_hyper_kernel");
}

}  // namespace octet::kernels
