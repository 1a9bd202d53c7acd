// amax hints: a CUDA elementwise op (binary, unary, axpy_) that writes a whole storage also writes
// the per-block maxima of |out| it saw (kernels/ops.cuh), and the storage keeps them for that
// version of its contents. fp8_amax of a tensor that covers such a storage exactly reduces the
// partials (one small kernel) instead of reading the data again: current scaling of gelu's output,
// of gelu's gradient and of a weight after sgd_step costs no extra pass. In-place writes through
// octet (copy_, fill_, axpy_, ...) bump Storage::version and so retire the hint; a write through a
// raw pointer is not seen (as for LinearFP8's weight cache).
#pragma once
#include <cstdint>
#include <memory>
#include <utility>

#include "octet/tensor.hpp"

namespace octet::detail {

// Below this many elements (4M: an amax pass of a few microseconds) an op keeps no hint, so that
// small, launch-bound ops do not pay for the partials' allocation.
constexpr int64_t kAmaxHintMinNumel = int64_t{1} << 22;

inline bool covers_storage(const Tensor& t) {
  const Storage& st = *t.impl()->storage;
  return t.impl()->offset == 0 && static_cast<size_t>(t.numel()) * dtype_size(t.dtype()) == st.bytes;
}

// A buffer for `partials` per-block maxima when an op about to write all of `out` on CUDA should
// keep a hint (f32/f16/bf16, at least kAmaxHintMinNumel elements, out covering its storage).
inline std::shared_ptr<Storage> amax_hint_buffer(const Tensor& out, int partials) {
  const DType t = out.dtype();
  // Wrapped memory keeps none: its owner writes it through its own pointer, which no version counts.
  if (out.device().is_cpu() || out.numel() < kAmaxHintMinNumel || !covers_storage(out) || out.impl()->storage->external ||
      (t != DType::f32 && t != DType::f16 && t != DType::bf16))
    return nullptr;
  return std::make_shared<Storage>(sizeof(uint32_t) * static_cast<size_t>(partials), out.device());
}

inline uint32_t* hint_data(const std::shared_ptr<Storage>& buffer) {
  return buffer ? static_cast<uint32_t*>(buffer->data) : nullptr;
}

// Records `blocks` partials in `buffer` as the hint of out's storage at its current version
// (call after the op's own version bump); blocks == 0 clears the hint.
inline void set_amax_hint(const Tensor& out, std::shared_ptr<Storage> buffer, int blocks) {
  Storage& st = *out.impl()->storage;
  st.amax_partials = blocks > 0 ? std::move(buffer) : nullptr;
  st.amax_blocks = blocks;
  st.amax_version = st.version;
  st.amax_numel = out.numel();
  st.amax_dtype = out.dtype();
}

// The partials (and their count) of x's amax when x covers a storage with a current hint.
inline const uint32_t* amax_hint(const Tensor& x, int* blocks) {
  const Storage& st = *x.impl()->storage;
  if (!st.amax_partials || st.amax_version != st.version || st.amax_numel != x.numel() ||
      st.amax_dtype != x.dtype() || !covers_storage(x))
    return nullptr;
  *blocks = st.amax_blocks;
  return static_cast<const uint32_t*>(st.amax_partials->data);
}

}  // namespace octet::detail
