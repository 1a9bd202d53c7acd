// DLPack import and export, zero-copy, for the versioned DLManagedTensorVersioned of DLPack 1.x and
// the legacy DLManagedTensor (dlpack_abi.hpp). Element types: f32, f64, f16 and bf16 (codes
// kDLFloat / kDLBfloat), u8, i32, i64, and the float8 formats of DLPack 1.1: f8_e4m3 is
// kDLFloat8_e4m3fn (code 10) and f8_e5m2 is kDLFloat8_e5m2 (code 12), 8 bits, 1 lane each.
// Devices: kDLCPU and kDLCUDAHost (pinned host memory) become Device::cpu(), kDLCUDA and
// kDLCUDAManaged become cuda:device_id.
//
// Export: the result shares the tensor's storage (no copy) and holds one reference to it until
// the consumer calls its deleter; it owns its shape and strides arrays (strides are always given,
// compact row-major), data points at the tensor's first element and byte_offset is 0. The
// versioned form carries version 1.1 and the read-only flag of a read-only import.
// Import: the tensor wraps dl_tensor.data + byte_offset through Tensor::from_blob (its checks
// apply) and takes ownership: the managed tensor's deleter runs once, when the last octet
// reference goes (views and re-exports included). A managed tensor flagged read-only gives a
// tensor that in-place ops refuse to write. Refused, each with an octet::Error that names what was
// given and with ownership left to the caller (its deleter does not run): a null managed tensor,
// a version major other than 1, a negative ndim or size, a null shape with ndim > 0, strides that
// are not the compact row-major ones (a size-1 dimension may carry any stride; an empty tensor any
// strides), a byte_offset that is not a multiple of the element size, an element type or lane
// count octet does not have, a device type other than those above. Nothing is ever copied to make
// an input acceptable.
// Streams: DLPack's C structs carry no stream. Before exporting, the producer's pending writes
// must be ordered before the consumer's use (the Python __dlpack__(stream=...) protocol does this;
// in C++ use events, docs/embedding.md).
#pragma once
#include "octet/dlpack_abi.hpp"
#include "octet/tensor.hpp"

namespace octet {

// A new DLManagedTensorVersioned viewing t; the caller owns it and calls its deleter once.
DLManagedTensorVersioned* to_dlpack(const Tensor& t);
// The legacy form for consumers before DLPack 1.0. It has no flags, so a read-only import is
// refused rather than handed out as writable.
DLManagedTensor* to_dlpack_legacy(const Tensor& t);
// A tensor over the managed tensor's memory; takes ownership on success, throws on failure (the
// caller keeps ownership).
Tensor from_dlpack(DLManagedTensorVersioned* managed);
Tensor from_dlpack(DLManagedTensor* managed);
// True for a tensor (or a view of one) imported with DLPACK_FLAG_BITMASK_READ_ONLY.
bool is_read_only(const Tensor& t);

}  // namespace octet
