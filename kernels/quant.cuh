// CUDA launchers of the quant family (same rules as src/cpu/quant.hpp, plus the stream).
// Launchers assume validated arguments (src/quant.cpp validates), launch nothing for n == 0,
// never synchronize the host (except the index_mismatches diagnostic), and check launches.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/quant_index.cuh"
#include "octet/dtype.hpp"

namespace octet::kernels {

// A code's index tables on the device: quant_index::Tables, the LUT entries, then the compact
// table's entries (at compact_offset bytes; compact.entries == 0: none, use the LUT).
struct QuantIndex {
  const void* data = nullptr;
  int32_t bytes = 0;  // a multiple of 16
  quant_index::LutShape shape;
  quant_index::Compact compact;
  int32_t compact_offset = 0;  // a multiple of 16
};

// A side job for the blockwise fake-quantize kernel: max |x| of another tensor of the same dtype,
// as per-CUDA-block partials in the amax-hint format (|x| bits, NaN 0x7FC00000; the hint
// arguments of quantize_global), computed in the same launch, its loads overlapping the lookups.
struct SideAbsmax {
  const void* x = nullptr;
  int64_t n = 0;
  uint32_t* partial = nullptr;  // side_absmax_capacity() entries
  int parts = 0;                // out: how many partials were written
};
// Entries a SideAbsmax::partial buffer needs on the current device (SMs x 8).
int side_absmax_capacity();

// One pass per block: codes and absmax, or (fake_out given, codes null: fake-quantize, one read
// and one write) absmax and code[q] * absmax in A's dtype; given both, two passes. Also below.
// side (fake-quantize only, n > 0): the side job runs in the fake-quantize launch (side->n == 0:
// parts = 0).
void quantize_blockwise(DType t, const void* A, int64_t n, const QuantIndex& q, int64_t blocksize, float* absmax,
                        uint8_t* codes, void* fake_out, cudaStream_t s, SideAbsmax* side = nullptr);
// absmax[0] = max |A| (NaN propagates as 0x7FC00000; 0 for n == 0) and the codes for
// x = A / absmax[0]: an absmax kernel writing per-block partials, then the quantize kernel,
// which reduces them (the absmax stays on the device; no memset). hint (may be null): `hint_parts`
// partials of max |A| in that format (an amax hint, src/amax_hint.hpp), which replace the absmax
// kernel.
// f16/bf16 with kTable16MinNumel elements or more: the quantize kernel is replaced by a table of the
// code (or fake value) of each of the 65536 bit patterns and one lookup per element.
void quantize_global(DType t, const void* A, int64_t n, const QuantIndex& q, float* absmax, uint8_t* codes,
                     void* fake_out, const uint32_t* hint, int hint_parts, cudaStream_t s);
inline constexpr int64_t kTable16MinNumel = int64_t{1} << 19;

// The operands of the tensor-core FP8 matmul (src/fp8_simulated.cpp, f16/bf16 inputs) for a code whose
// values times kE4M3Mul are E4M3 numbers (bitsandbytes' fp8_e4m3 table: e / 480 with e an
// E4M3-like value up to 480, so code * 240 = e / 2 is an E4M3 (fn) number except below 2^-6,
// where RN takes the nearest one). Codes and absmax are those of quantize_blockwise / quantize.
inline constexpr float kE4M3Mul = 240.0f;
// out[i] = e4m3(code[q_i] * kE4M3Mul) and absmax per block (side: as quantize_blockwise's).
void quantize_blockwise_e4m3(DType t, const void* A, int64_t n, const QuantIndex& q, int64_t blocksize,
                             float* absmax, uint8_t* out, cudaStream_t s, SideAbsmax* side = nullptr);
// out[c * rows + i] = absmax[(i * k + c * 128) / blocksize] for c < k / 128: a row-blocked
// absmax as the per-128-element scales of the FP8 GEMM (k % blocksize == 0, blocksize >= 128).
void expand_block_scales(const float* absmax, int64_t rows, int64_t k, int64_t blocksize, float* out, cudaStream_t s);
// A (rows, cols): *absmax = max |A| (from the hint partials when given), out = e4m3(code[q] *
// kE4M3Mul), as (cols, rows) when transpose (then rows % 16 == 0, cols % 8 == 0 and both
// pointers 16-byte aligned), and scale[0..scale_n) = *absmax / scale_div.
void quantize_global_e4m3(DType t, const void* A, int64_t rows, int64_t cols, bool transpose, const QuantIndex& q,
                          float* absmax, uint8_t* out, const uint32_t* hint, int hint_parts, float* scale,
                          int64_t scale_n, float scale_div, cudaStream_t s);
// out = code[q] * absmax[i >> log2_blocksize] (+ *offset when given); log2_blocksize 63: global.
void dequantize(const uint8_t* codes, int64_t n, const float* code, const float* absmax, int log2_blocksize,
                const float* offset, DType out_t, void* out, cudaStream_t s);
// Nested absmax: *out = mean of x in the fixed double tree of cpu::mean_tree; out = x - *offset.
void mean_tree(const float* x, int64_t n, float* out, cudaStream_t s);
void sub_offset(const float* x, int64_t n, const float* offset, float* out, cudaStream_t s);

// Diagnostic for tests: the number of the 2^32 float bit patterns whose lut_index differs from
// closed_form (0 when the table is right). Waits for the result.
uint64_t index_mismatches(const QuantIndex& q, cudaStream_t s);

}  // namespace octet::kernels
