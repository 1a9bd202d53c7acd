// The 16-bit table path of global quantization. With one absmax for the whole tensor, an f16 or
// bf16 element's code (and its fake value, or its E4M3 byte) depends on its 16 bits alone, so
// table16_kernel evaluates all 65536 bit patterns once, with the arithmetic of the CPU reference
// (x = v / absmax by qi::global_x, index by qi::closed_form, which the kernels' lookups equal),
// and table16_map_kernel maps every element through the table in shared memory: one 2-byte
// (fake) or 1-byte (code) shared load per element instead of a division and an index search.
// table16_map_t_kernel writes the E4M3 bytes transposed (the tensor-core FP8 GEMM's K-major B).
// Entry points: table16_quantize (quantize_global of kTable16MinNumel elements or more, from
// kernels/quant_quantize.cu) and quantize_global_e4m3 (kernels/quant.cuh).
#include "kernels/quant_launch.cuh"

namespace octet::kernels {
namespace {
using namespace quant_detail;

constexpr int kPatterns = 65536;
constexpr int kMapThreads = 1024;  // one block per SM: the fake table takes 128 KiB
constexpr int kMapVectors = 2;     // 16-byte vectors per thread and step

template <class T>
__device__ __forceinline__ T from_bits16(uint16_t p) {
  if constexpr (std::is_same_v<T, __half>)
    return __ushort_as_half(p);
  else
    return __ushort_as_bfloat16(p);
}

template <class T>
__device__ __forceinline__ uint16_t to_bits16(T v) {
  if constexpr (std::is_same_v<T, __half>)
    return __half_as_ushort(v);
  else
    return __bfloat16_as_ushort(v);
}

// Grid: kPatterns / kThreads blocks. The absmax from the partials (block 0 writes *absmax).
// E4M3 (bytes): e4m3(code[q] * kE4M3Mul) instead of the code q, and scale[0..scale_n) = absmax /
// scale_div (the per-column scales of the tensor-core FP8 GEMM).
template <class T, bool Fake, bool E4M3 = false>
__global__ void __launch_bounds__(kThreads) table16_kernel(const qi::Tables* __restrict__ gtab,
                                                           const unsigned* __restrict__ partial, int parts,
                                                           float* __restrict__ absmax, void* __restrict__ table,
                                                           float* __restrict__ scale = nullptr, int64_t scale_n = 0,
                                                           float scale_div = 1.0f) {
  __shared__ unsigned red[kThreads / 32];
  const float gabs = global_absmax(partial, parts, absmax, red);
  const unsigned p = blockIdx.x * kThreads + threadIdx.x;
  const int q = qi::closed_form(gtab->code, gtab->mid, qi::global_x(load_f32(from_bits16<T>(p)), gabs));
  if constexpr (Fake) {
    static_cast<uint16_t*>(table)[p] = to_bits16(store_f32<T>(__fmul_rn(gtab->code[q], gabs)));
  } else if constexpr (E4M3) {
    static_cast<uint8_t*>(table)[p] =
        __nv_cvt_float_to_fp8(__fmul_rn(gtab->code[q], kE4M3Mul), __NV_SATFINITE, __NV_E4M3);
    for (int64_t i = p; i < scale_n; i += kPatterns) scale[i] = __fdiv_rn(gabs, scale_div);
  } else {
    static_cast<uint8_t*>(table)[p] = static_cast<uint8_t>(q);
  }
}

// out[i] = table[A[i]] (A and a fake out as 16-bit patterns; codes as bytes). Aligned: steps of
// kMapVectors 16-byte vectors per thread, the next step's loads issued before this one's lookups;
// the rest (a tail of fewer than 8 elements, or everything when a pointer is unaligned) one by one.
template <bool Fake>
__global__ void __launch_bounds__(kMapThreads, 1)
    table16_map_kernel(const uint16_t* __restrict__ A, int64_t n, const uint4* __restrict__ table,
                       uint8_t* __restrict__ codes, uint16_t* __restrict__ fake, bool aligned) {
  extern __shared__ uint4 tab4[];
  const int64_t vecs = aligned ? n / 8 : 0, stride = int64_t{gridDim.x} * kMapThreads;
  int64_t v = blockIdx.x * int64_t{kMapThreads} + threadIdx.x;  // this thread's first vector
  const uint4* A4 = reinterpret_cast<const uint4*>(A);
  uint4 x[kMapVectors];
#pragma unroll
  for (int j = 0; j < kMapVectors; ++j)
    if (v + j * stride < vecs) x[j] = __ldcs(A4 + v + j * stride);
  for (int i = threadIdx.x; i < kPatterns * (Fake ? 2 : 1) / 16; i += kMapThreads) tab4[i] = __ldg(table + i);
  __syncthreads();
  const uint16_t* tab16 = reinterpret_cast<const uint16_t*>(tab4);
  const uint8_t* tab8 = reinterpret_cast<const uint8_t*>(tab4);
  for (; v < vecs; v += kMapVectors * stride) {
    uint4 y[kMapVectors];
#pragma unroll
    for (int j = 0; j < kMapVectors; ++j) y[j] = x[j];
#pragma unroll
    for (int j = 0; j < kMapVectors; ++j)
      if (v + (kMapVectors + j) * stride < vecs) x[j] = __ldcs(A4 + v + (kMapVectors + j) * stride);
#pragma unroll
    for (int j = 0; j < kMapVectors; ++j) {
      const int64_t e = v + j * stride;
      if (e >= vecs) break;
      const uint32_t w[4] = {y[j].x, y[j].y, y[j].z, y[j].w};
      if constexpr (Fake) {
        uint32_t o[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) o[k] = __byte_perm(tab16[w[k] & 0xFFFFu], tab16[w[k] >> 16], 0x5410);
        reinterpret_cast<uint4*>(fake)[e] = make_uint4(o[0], o[1], o[2], o[3]);
      } else {
        uint32_t o[2];
#pragma unroll
        for (int k = 0; k < 2; ++k)
          o[k] = __byte_perm(__byte_perm(tab8[w[2 * k] & 0xFFFFu], tab8[w[2 * k] >> 16], 0x0040),
                             __byte_perm(tab8[w[2 * k + 1] & 0xFFFFu], tab8[w[2 * k + 1] >> 16], 0x0040), 0x5410);
        reinterpret_cast<uint2*>(codes)[e] = make_uint2(o[0], o[1]);
      }
    }
  }
  for (int64_t i = vecs * 8 + blockIdx.x * int64_t{kMapThreads} + threadIdx.x; i < n; i += stride) {
    const uint16_t a = A[i];
    if constexpr (Fake)
      fake[i] = tab16[a];
    else
      codes[i] = tab8[a];
  }
}

// out (cols, rows) bytes = table[A] transposed, A (rows, cols) 16-bit row-major: the tensor-core
// FP8 GEMM wants its operands K-major, and a (K, N) B is not. Tiles of kTRows x kTCols, walked by
// a persistent grid (the table is loaded once per CUDA block). A thread loads kTRowsPerThread rows
// of 8 columns (16-byte vectors), maps them and writes each column's 4 bytes as one word into the
// transposed tile in shared memory (row stride kTRows / 4 + 1 words: the reads are free of bank
// conflicts, the writes 2-way); then the tile leaves as 16-byte vectors of output rows. Requires
// rows % 16 == 0, cols % 8 == 0 and 16-byte aligned pointers (the caller's conditions for the
// FP8 GEMM).
constexpr int kTThreads = 256, kTCols = 64, kTRowsPerThread = 4;
constexpr int kTRows = kTRowsPerThread * kTThreads / (kTCols / 8);  // 128
constexpr int kTStride = kTRows / 4 + 1;                            // words per transposed row

__global__ void __launch_bounds__(kTThreads)
    table16_map_t_kernel(const uint16_t* __restrict__ A, int64_t rows, int64_t cols, const uint4* __restrict__ table,
                         uint8_t* __restrict__ out) {
  extern __shared__ uint4 tab4[];
  uint32_t* tile = reinterpret_cast<uint32_t*>(tab4 + kPatterns / 16);  // kTCols x kTStride words
  for (int i = threadIdx.x; i < kPatterns / 16; i += kTThreads) tab4[i] = __ldg(table + i);
  __syncthreads();
  const uint8_t* tab8 = reinterpret_cast<const uint8_t*>(tab4);
  const int64_t row_tiles = (rows + kTRows - 1) / kTRows, col_tiles = (cols + kTCols - 1) / kTCols;
  const int c8 = threadIdx.x % (kTCols / 8), r4 = threadIdx.x / (kTCols / 8);  // column vector, row quad
  for (int64_t t = blockIdx.x; t < row_tiles * col_tiles; t += gridDim.x) {
    const int64_t r0 = t / col_tiles * kTRows, c0 = t % col_tiles * kTCols;
    const int64_t col = c0 + c8 * 8;
    uint4 x[kTRowsPerThread];
#pragma unroll
    for (int k = 0; k < kTRowsPerThread; ++k) {
      const int64_t r = r0 + r4 * kTRowsPerThread + k;
      x[k] = r < rows && col < cols ? __ldcs(reinterpret_cast<const uint4*>(A + r * cols + col))
                                    : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int q = 0; q < 8; ++q) {
      uint32_t w = 0;
#pragma unroll
      for (int k = 0; k < kTRowsPerThread; ++k) {
        const uint32_t v[4] = {x[k].x, x[k].y, x[k].z, x[k].w};
        const uint32_t bits = (v[q / 2] >> (16 * (q % 2))) & 0xFFFFu;
        w |= uint32_t{tab8[bits]} << (8 * k);
      }
      tile[(c8 * 8 + q) * kTStride + r4] = w;
    }
    __syncthreads();
    constexpr int kVecs = kTCols * kTRows / 16;  // 16-byte vectors of the transposed tile
#pragma unroll
    for (int i = threadIdx.x; i < kVecs; i += kTThreads) {
      const int oc = i / (kTRows / 16), chunk = i % (kTRows / 16);
      const int64_t orow = c0 + oc, ocol = r0 + chunk * 16;
      const uint32_t* src = tile + oc * kTStride + chunk * 4;
      if (orow < cols && ocol < rows)
        *reinterpret_cast<uint4*>(out + orow * rows + ocol) = make_uint4(src[0], src[1], src[2], src[3]);
    }
    __syncthreads();
  }
}

// The map pass of a table of kPatterns entries of `bytes` in total (fake: 2 bytes each).
template <bool Fake>
void launch_map(const void* A, int64_t n, const void* table, size_t bytes, uint8_t* codes, void* fake, bool aligned,
                cudaStream_t s) {
  const auto kernel = table16_map_kernel<Fake>;
  OCTET_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  const unsigned grid = persistent_grid(kernel, bytes, (n + kMapThreads * 8 - 1) / (kMapThreads * 8), kMapThreads);
  kernel<<<grid, kMapThreads, bytes, s>>>(static_cast<const uint16_t*>(A), n, static_cast<const uint4*>(table), codes,
                                          static_cast<uint16_t*>(fake), aligned);
  OCTET_LAUNCH_CHECK("table16_map_kernel");
}

// quantize_global_e4m3 after the absmax: the byte table, then the plain or the transposed map.
template <class T>
void table16_e4m3(const T* A, int64_t rows, int64_t cols, bool transpose, const QuantIndex& q,
                  const unsigned* partial, int parts, float* absmax, uint8_t* out, float* scale, int64_t scale_n,
                  float scale_div, cudaStream_t s) {
  void* table = nullptr;
  OCTET_CUDA_CHECK(cudaMallocAsync(&table, kPatterns, s));
  table16_kernel<T, false, true><<<kPatterns / kThreads, kThreads, 0, s>>>(
      static_cast<const qi::Tables*>(q.data), partial, parts, absmax, table, scale, scale_n, scale_div);
  OCTET_LAUNCH_CHECK("table16_kernel");
  if (!transpose) {
    launch_map<false>(A, rows * cols, table, kPatterns, out, nullptr, aligned16(A) && aligned16(out), s);
  } else {
    const auto kernel = table16_map_t_kernel;
    const size_t smem = kPatterns + sizeof(uint32_t) * kTCols * kTStride;
    OCTET_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    const int64_t tiles = (rows + kTRows - 1) / kTRows * ((cols + kTCols - 1) / kTCols);
    const unsigned grid = persistent_grid(kernel, smem, tiles, kTThreads);
    kernel<<<grid, kTThreads, smem, s>>>(reinterpret_cast<const uint16_t*>(A), rows, cols,
                                         static_cast<const uint4*>(table), out);
    OCTET_LAUNCH_CHECK("table16_map_t_kernel");
  }
  OCTET_CUDA_CHECK(cudaFreeAsync(table, s));
}

}  // namespace

namespace quant_detail {

// Per output kind, the table from the partials, then the map pass.
template <class T>
void table16_quantize(const T* A, int64_t n, const QuantIndex& q, const unsigned* partial, int parts, float* absmax,
                      uint8_t* codes, T* fake, cudaStream_t s) {
  auto pass = [&](auto fake_tag) {
    constexpr bool Fake = decltype(fake_tag)::value;
    constexpr size_t bytes = kPatterns * (Fake ? 2 : 1);
    void* table = nullptr;
    OCTET_CUDA_CHECK(cudaMallocAsync(&table, bytes, s));
    table16_kernel<T, Fake><<<kPatterns / kThreads, kThreads, 0, s>>>(static_cast<const qi::Tables*>(q.data), partial,
                                                                      parts, absmax, table);
    OCTET_LAUNCH_CHECK("table16_kernel");
    launch_map<Fake>(A, n, table, bytes, codes, fake, aligned16(A) && (Fake ? aligned16(fake) : aligned16(codes)), s);
    OCTET_CUDA_CHECK(cudaFreeAsync(table, s));
  };
  if (codes) pass(std::false_type{});
  if (fake) pass(std::true_type{});
}

template void table16_quantize<__half>(const __half*, int64_t, const QuantIndex&, const unsigned*, int, float*,
                                       uint8_t*, __half*, cudaStream_t);
template void table16_quantize<__nv_bfloat16>(const __nv_bfloat16*, int64_t, const QuantIndex&, const unsigned*, int,
                                              float*, uint8_t*, __nv_bfloat16*, cudaStream_t);

}  // namespace quant_detail

void quantize_global_e4m3(DType t, const void* A, int64_t rows, int64_t cols, bool transpose, const QuantIndex& q,
                          float* absmax, uint8_t* out, const uint32_t* hint, int hint_parts, float* scale,
                          int64_t scale_n, float scale_div, cudaStream_t s) {
  const int64_t n = rows * cols;
  if (n == 0) return;
  if (transpose && (rows % 16 || cols % 8 || !aligned16(A) || !aligned16(out)))
    fail("quantize_global_e4m3", cat("the transposed map wants rows % 16 == 0, cols % 8 == 0 and 16-byte aligned "
                                     "pointers; got (", rows, ", ", cols, ")"));
  visit_quant16(t, "quantize_global_e4m3", [&](auto type) {
    using T = typename decltype(type)::type;
    const T* a = static_cast<const T*>(A);
    with_absmax_partials(a, n, hint, hint_parts, s, [&](const unsigned* partial, int parts) {
      table16_e4m3<T>(a, rows, cols, transpose, q, partial, parts, absmax, out, scale, scale_n, scale_div, s);
    });
  });
}

}  // namespace octet::kernels
