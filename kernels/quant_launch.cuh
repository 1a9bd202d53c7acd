// Host-side launch helpers of the quant kernels (included by kernels/quant_*.cu only): the grid
// of a persistent kernel, the dynamic shared memory of the index tables, the dtype dispatch, the
// one blocksize dispatcher of the blockwise kernels, and the entry points the units call across
// files (the absmax pass of kernels/quant_absmax.cu, the 16-bit table path of
// kernels/quant_table16.cu).
#pragma once
#include <algorithm>
#include <mutex>
#include <type_traits>
#include <vector>

#include "kernels/quant_lookup.cuh"

namespace octet::kernels::quant_detail {

// Grid of a persistent kernel: SMs x resident blocks, at most `tiles` (the occupancy query is
// made once per kernel, shared memory size and device).
template <class Kernel>
unsigned persistent_grid(Kernel kernel, size_t smem, int64_t tiles, int threads = kThreads) {
  struct Seen {
    const void* kernel;
    size_t smem;
    int dev, blocks;
  };
  static std::mutex mutex;
  static std::vector<Seen> seen;
  int dev = 0;
  OCTET_CUDA_CHECK(cudaGetDevice(&dev));
  int blocks = 0;
  {
    std::lock_guard lock(mutex);
    for (const Seen& e : seen)
      if (e.kernel == reinterpret_cast<const void*>(kernel) && e.smem == smem && e.dev == dev) blocks = e.blocks;
  }
  if (blocks == 0) {
    int sms = 0, per_sm = 0;
    OCTET_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    OCTET_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
    blocks = sms * std::max(per_sm, 1);
    std::lock_guard lock(mutex);
    seen.push_back({reinterpret_cast<const void*>(kernel), smem, dev, blocks});
  }
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(tiles, blocks)));
}

// Dynamic shared memory of a kernel using load_index (the opt-in above 48 KiB set when needed).
template <class Kernel>
size_t index_smem(Kernel kernel, const qi::Compact& c, bool fake) {
  const size_t bytes = rep_bytes(fake) + 16 * static_cast<size_t>((c.entries + 3) / 4);
  if (bytes > 48 * 1024)
    OCTET_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(rep_bytes(true) + 4 * qi::kMaxCompact)));
  return bytes;
}

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// f(type_tag<T>{}) for the element types of the quant kernels: f32, f16, bf16 (validated by
// src/quant.cpp).
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

// The same for the 16-bit types only (the E4M3 operand kernels); op names the caller in the error.
template <class F>
void visit_quant16(DType t, const char* op, F&& f) {
  if (t == DType::f16) return f(type_tag<__half>{});
  if (t == DType::bf16) return f(type_tag<__nv_bfloat16>{});
  fail(op, cat("dtype ", dtype_name(t), " is not supported"));
}

// f(std::integral_constant<int, B>{}) for the blockwise kernels' compile-time blocksize B, a power
// of two in [32, 4096] (validated by src/quant.cpp); op names the caller in the error.
template <class F>
void visit_blocksize(int64_t blocksize, const char* op, F&& f) {
  switch (blocksize) {
    case 32:
      return f(std::integral_constant<int, 32>{});
    case 64:
      return f(std::integral_constant<int, 64>{});
    case 128:
      return f(std::integral_constant<int, 128>{});
    case 256:
      return f(std::integral_constant<int, 256>{});
    case 512:
      return f(std::integral_constant<int, 512>{});
    case 1024:
      return f(std::integral_constant<int, 1024>{});
    case 2048:
      return f(std::integral_constant<int, 2048>{});
    case 4096:
      return f(std::integral_constant<int, 4096>{});
    default:
      fail(op, cat("blocksize ", blocksize, " reached the kernels"));
  }
}

// kernels/quant_absmax.cu: the absmax kernel's per-block partials of max |A| (float bits, NaN
// canonical) in a new stream-ordered buffer of *parts entries, which the caller frees on s.
template <class T>
unsigned* absmax_partials(const T* A, int64_t n, cudaStream_t s, int* parts);

// finish(partial, parts) with the hint's partials of max |A| when given, otherwise with those of
// an absmax pass over A (a temporary buffer).
template <class T, class F>
void with_absmax_partials(const T* A, int64_t n, const uint32_t* hint, int hint_parts, cudaStream_t s, F&& finish) {
  if (hint) return finish(hint, hint_parts);
  int parts = 0;
  unsigned* partial = absmax_partials(A, n, s, &parts);
  finish(partial, parts);
  OCTET_CUDA_CHECK(cudaFreeAsync(partial, s));
}

// kernels/quant_table16.cu: the table path of quantize_global for 16-bit T (kTable16MinNumel
// elements or more), after the absmax partials.
template <class T>
void table16_quantize(const T* A, int64_t n, const QuantIndex& q, const unsigned* partial, int parts, float* absmax,
                      uint8_t* codes, T* fake, cudaStream_t s);

}  // namespace octet::kernels::quant_detail
