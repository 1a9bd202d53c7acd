// CPU path of the quant family (src/cpu/quant_fast.cpp: vectorized where the processor allows,
// threaded, bit-identical to the closed-form rule on every machine) and the host-side builders
// of the code tables and of the kernels' index lookup table (src/cpu/quant.cpp).
// Conventions: arguments are validated by src/quant.cpp; element counts are 64-bit; inputs
// are f32/f64/f16/bf16 read as float; `fake_out` (nullable) receives the dequantized values in
// the input's dtype; `lut` (nullable) is the Code's index table: its compact table replaces the
// binary search (nullptr or a table without one: closed_form() per element); log2_blocksize 63
// means one absmax for the whole tensor.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/quant_index.cuh"
#include "octet/device.hpp"
#include "octet/dtype.hpp"

namespace octet::cpu {

// Table values (float32, 256 entries, not yet validated). Throw octet::Error on bad arguments.
std::vector<float> dynamic_map(bool is_signed, int max_exponent_bits, int total_bits);
std::vector<float> fp8_map(bool is_signed, int exponent_bits, int precision_bits, int total_bits);
std::vector<float> linear_map(bool is_signed, int total_bits);

quant_index::Tables index_tables(const float* code);  // code + float32 midpoints

struct IndexLut {
  quant_index::LutShape shape;
  std::vector<quant_index::LutEntry> entries;  // positive half, then negative half
  int slow_buckets = 0;
  quant_index::Compact compact;            // the kernels' table (compact.entries == 0: none)
  std::vector<uint32_t> compact_entries;
};
IndexLut build_index_lut(const quant_index::Tables& t);

void quantize_blockwise(DType t, const void* A, int64_t n, const quant_index::Tables& tab, const IndexLut* lut,
                        int64_t blocksize, float* absmax, uint8_t* codes, void* fake_out);
// max |A| with NaN propagating (canonical NaN 0x7FC00000); 0 for n == 0.
float absmax_global(DType t, const void* A, int64_t n);
void quantize_global(DType t, const void* A, int64_t n, const quant_index::Tables& tab, const IndexLut* lut,
                     float absmax, uint8_t* codes, void* fake_out);
// The same without a lookup table: the binary search of closed_form() per element.
inline void quantize_blockwise(DType t, const void* A, int64_t n, const quant_index::Tables& tab, int64_t blocksize,
                               float* absmax, uint8_t* codes, void* fake_out) {
  quantize_blockwise(t, A, n, tab, nullptr, blocksize, absmax, codes, fake_out);
}
// out = code[q] * absmax[i >> log2_blocksize] (+ *offset when given), rounded to out_t.
void dequantize(const uint8_t* codes, int64_t n, const float* code, const float* absmax, int log2_blocksize,
                const float* offset, DType out_t, void* out);
// Nested absmax helpers: the mean in a fixed double-precision tree (the CUDA order, see
// kernels/quant_nested_absmax.cu), and out = x - offset.
float mean_tree(const float* x, int64_t n);
void sub_offset(const float* x, int64_t n, float offset, float* out);

}  // namespace octet::cpu

// Internal access for tests (defined in src/quant.cpp): a Code's host tables and index LUT,
// its device image for the kernel launchers, and the number of float bit patterns where the
// CUDA lut_index differs from closed_form (waits for the GPU).
namespace octet {
class Code;
class Tensor;
namespace kernels {
struct QuantIndex;
}
namespace quant_internal {
const quant_index::Tables& tables(const Code& code);
const cpu::IndexLut& index_lut(const Code& code);
kernels::QuantIndex device_index(const Code& code, Device device);
uint64_t index_mismatches_on(const Code& code, Device device);
// fake_quantize_blockwise (blocksize > 0) or fake_quantize (0) whose kernels run on the
// device's side stream (CUDA; on the CPU a plain call): the caller keeps `absmax` (written by
// the kernels) alive and calls detail::join_side_stream before using or dropping the result.
Tensor fake_quantize_forked(const Tensor& A, const Code& code, int64_t blocksize, Tensor& absmax);
// Aq = fake_quantize_blockwise(A, code, a_blocksize) and Bq = fake_quantize(B, code) (same bits).
// CUDA, A and B of one dtype and device: max |B| is the side job of A's kernel (kernels::SideAbsmax),
// so B needs one more pass, not two. Otherwise the two plain calls.
void fake_quantize_pair(const Tensor& A, int64_t a_blocksize, const Tensor& B, const Code& code, Tensor& Aq,
                        Tensor& Bq);
// The tensor-core FP8 forward's operands (src/fp8_simulated.cpp; CUDA, A and B f16 or bf16 of one device,
// A (..., K) non-empty, code == Code::fp8_e4m3(), B (K, N), or (N, K) when b_transposed, with N
// and K multiples of 16): A8 (rows, K) and B8 (N, K) are f8_e4m3 tensors of
// e4m3(code[q] * kernels::kE4M3Mul) for A's blockwise codes q (a_blocksize) and B's global codes;
// with the scales of detail::Fp8GemmScales (src/fp8_simulated_internal.hpp): a_scale is A's block absmax,
// per row (blocks = rows) or, block128 (rows holding whole blocks of 128 or more), per 128
// elements as (K / 128, rows); b_scale = max |B| / kE4M3Mul^2, N of them, or (N / 128) * (K / 128)
// with block128. Bq (when given): B's fake-quantize from the same max |B|. max |B| comes from
// B's amax hint or is the side job of A's kernel, so B is read twice (three times with Bq), A once.
void e4m3_operands(const Tensor& A, int64_t a_blocksize, const Tensor& B, bool b_transposed, const Code& code,
                   bool block128, Tensor& A8, Tensor& a_scale, Tensor& B8, Tensor& b_scale, Tensor* Bq);
}  // namespace quant_internal
}  // namespace octet
