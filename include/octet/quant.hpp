// 8-bit quantization with 256-entry code tables, bit-exact with bitsandbytes 0.49.2 (docs/quant.md
// has the exact semantics; docs/differences.md the deliberate differences).
// - Code tables: float32, 256 entries, sorted ascending. A Code validates a table once when it
//   is wrapped and caches a copy per device; every quantize call takes a Code.
// - Index rule (both devices): nearest entry by the float32 midpoint (a ⊕ b) ⊗ 0.5, ties to the
//   even index, NaN to index 0, no clamping (x above the table -> 255, below -> 0).
// - quantize/dequantize: one absmax for the whole tensor (x = A ⊘ absmax, IEEE division).
// - quantize_blockwise: blocks of `blocksize` consecutive row-major elements (a power of two in
//   [32, 4096]); absmax per block; x = A ⊗ (1 / absmax) with a correctly rounded reciprocal.
// - All-zero blocks/tensors get the code of 0 and dequantize to +0. Any size, including 0.
// - The ops refuse inputs that require grad (codes have no gradient; fake_quantize callers
//   pass detach()ed tensors and define their own backward).
// docs/quant.md has the index method and the design decisions.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "octet/tensor.hpp"

namespace octet {

namespace detail { struct CodeAccess; }

// The tables of bitsandbytes 0.49.2, bit for bit (float32 [256]); invalid arguments throw.
Tensor create_dynamic_map(bool is_signed = true, int max_exponent_bits = 7, int total_bits = 8);
Tensor create_fp8_map(bool is_signed, int exponent_bits, int precision_bits, int total_bits = 8);
Tensor create_linear_map(bool is_signed = true, int total_bits = 8);

// A validated code table (f32, 256 sorted entries, no NaN), shared and cached per device.
class Code {
 public:
  Code();                                                   // the signed dynamic table
  explicit Code(const Tensor& table, std::string name = "user");  // validates (reads it once)
  static Code dynamic(bool is_signed = true);
  static Code fp8_e4m3();  // create_fp8_map(true, 4, 3, 8): bitsandbytes' forward code
  static Code fp8_e5m2();  // create_fp8_map(true, 5, 2, 8): bitsandbytes' backward code
  static Code linear();
  const std::string& name() const;
  const std::vector<float>& values() const;  // host copy
  Tensor table(Device device) const;         // f32 [256] on device (cached; no copy after the first)
                                             // the cached tensor is shared: never write into it

 private:
  friend struct detail::CodeAccess;  // src/quant.cpp: the index tables of the kernels
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

struct QuantState {
  Tensor absmax;          // f32: [1] for global, [ceil(n / blocksize)] for blockwise (nested: u8 codes)
  Tensor code;            // f32 [256] on the codes' device
  int64_t blocksize = 0;  // 0 for global quantize
  DType dtype = DType::f32;  // dtype of the quantized input (dequantize's default output dtype)
  Shape shape;
  // nested absmax (quantize_blockwise(..., nested = true)): absmax holds u8 codes of
  // (absmax - offset) quantized blockwise with the dynamic table and the same blocksize.
  bool nested = false;
  Tensor offset;                       // f32 [] (mean of the original absmax)
  std::shared_ptr<QuantState> state2;  // the inner state
};

struct Quantized {
  Tensor codes;  // u8, A's shape
  QuantState state;
};

Quantized quantize(const Tensor& A, const Code& code = Code());
Tensor dequantize(const Tensor& codes, const QuantState& state, std::optional<DType> out_dtype = std::nullopt);
Quantized quantize_blockwise(const Tensor& A, const Code& code = Code(), int64_t blocksize = 4096, bool nested = false);
Tensor dequantize_blockwise(const Tensor& codes, const QuantState& state,
                            std::optional<DType> out_dtype = std::nullopt);

// Fused quantize + dequantize in one pass, output in A's dtype, with exactly the codes of
// quantize_blockwise / quantize (used by the FP8 matmuls to simulate FP8 operands).
// fake_quantize follows bitsandbytes' global path: quantize A.to(f32), dequantize, cast back.
Tensor fake_quantize_blockwise(const Tensor& A, const Code& code, int64_t blocksize);
Tensor fake_quantize(const Tensor& A, const Code& code);

}  // namespace octet
