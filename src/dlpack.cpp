// DLPack import and export (include/octet/dlpack.hpp): the checks of an import, the element-type
// and device mappings, and the managed tensors octet hands out (one heap block each: the managed
// struct, the reference to the storage and the shape and strides arrays it points at).
#include "octet/dlpack.hpp"

#include <memory>
#include <vector>

#include "src/check.hpp"
#include "src/runtime_internal.hpp"

namespace octet {
namespace {

// What octet's element types are in DLPack (code, bits; one lane).
struct Mapping {
  DType dtype;
  uint8_t code;
  uint8_t bits;
};
constexpr Mapping kMappings[] = {
    {DType::f32, kDLFloat, 32},         {DType::f64, kDLFloat, 64},      {DType::f16, kDLFloat, 16},
    {DType::bf16, kDLBfloat, 16},       {DType::u8, kDLUInt, 8},         {DType::i32, kDLInt, 32},
    {DType::i64, kDLInt, 64},           {DType::f8_e4m3, kDLFloat8_e4m3fn, 8},
    {DType::f8_e5m2, kDLFloat8_e5m2, 8},
};
constexpr const char* kTypesAccepted =
    "float 16/32/64, bfloat 16, uint 8, int 32/64, float8_e4m3fn or float8_e5m2 bits, 1 lane";

const char* code_name(uint8_t code) {
  switch (code) {
    case kDLInt: return "int";
    case kDLUInt: return "uint";
    case kDLFloat: return "float";
    case kDLOpaqueHandle: return "opaque handle";
    case kDLBfloat: return "bfloat";
    case kDLComplex: return "complex";
    case kDLBool: return "bool";
    case kDLFloat8_e3m4: return "float8_e3m4";
    case kDLFloat8_e4m3: return "float8_e4m3";
    case kDLFloat8_e4m3b11fnuz: return "float8_e4m3b11fnuz";
    case kDLFloat8_e4m3fn: return "float8_e4m3fn";
    case kDLFloat8_e4m3fnuz: return "float8_e4m3fnuz";
    case kDLFloat8_e5m2: return "float8_e5m2";
    case kDLFloat8_e5m2fnuz: return "float8_e5m2fnuz";
    case kDLFloat8_e8m0fnu: return "float8_e8m0fnu";
    case kDLFloat6_e2m3fn: return "float6_e2m3fn";
    case kDLFloat6_e3m2fn: return "float6_e3m2fn";
    case kDLFloat4_e2m1fn: return "float4_e2m1fn";
    default: return "unknown";
  }
}

DLDataType to_dl(DType dtype) {
  for (const Mapping& m : kMappings)
    if (m.dtype == dtype) return {m.code, m.bits, 1};
  fail_arg("to_dlpack", "t", "a tensor of a DType enumerator", cat("dtype value ", static_cast<int>(dtype)));
}

DType from_dl(std::string_view op, DLDataType type) {
  if (type.lanes == 1)
    for (const Mapping& m : kMappings)
      if (m.code == type.code && m.bits == type.bits) return m.dtype;
  fail_arg(op, "dl_tensor.dtype", kTypesAccepted,
           cat("code ", int(type.code), " (", code_name(type.code), "), ", int(type.bits), " bits, ", type.lanes,
               type.lanes == 1 ? " lane" : " lanes"));
}

const char* device_type_name(int32_t type) {
  switch (type) {
    case kDLCPU: return "CPU";
    case kDLCUDA: return "CUDA";
    case kDLCUDAHost: return "CUDA host";
    case kDLOpenCL: return "OpenCL";
    case kDLVulkan: return "Vulkan";
    case kDLMetal: return "Metal";
    case kDLVPI: return "VPI";
    case kDLROCM: return "ROCm";
    case kDLROCMHost: return "ROCm host";
    case kDLExtDev: return "ExtDev";
    case kDLCUDAManaged: return "CUDA managed";
    case kDLOneAPI: return "oneAPI";
    case kDLWebGPU: return "WebGPU";
    case kDLHexagon: return "Hexagon";
    case kDLMAIA: return "MAIA";
    default: return "unknown";
  }
}

Device from_dl(std::string_view op, DLDevice device) {
  switch (device.device_type) {
    case kDLCPU:
    case kDLCUDAHost: return Device::cpu();
    case kDLCUDA:
    case kDLCUDAManaged:
      if (device.device_id < 0)
        fail_arg(op, "dl_tensor.device", "a device_id >= 0", cat("device_id ", device.device_id));
      return Device::cuda(device.device_id);
    default:
      fail_arg(op, "dl_tensor.device", "device type CPU (1), CUDA (2), CUDA host (3) or CUDA managed (13)",
               cat("device type ", static_cast<int32_t>(device.device_type), " (",
                   device_type_name(device.device_type), ")"));
  }
}

Shape strides_of(const Shape& shape) {
  Shape strides(shape.size());
  int64_t stride = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = stride;
    // Only an empty tensor's sizes can multiply past 2^63 (found by tools/fuzz-dlpack); its strides
    // mean nothing, so the overflowing ones become 0.
    if (__builtin_mul_overflow(stride, shape[i], &stride)) stride = 0;
  }
  return strides;
}

// Wraps the memory a DLTensor describes after the checks of dlpack.hpp; `release` returns it to
// its producer.
Tensor wrap(std::string_view op, const DLTensor& dl, std::function<void(void*)> release) {
  if (dl.ndim < 0) fail_arg(op, "dl_tensor.ndim", "ndim >= 0", cat(dl.ndim));
  if (dl.ndim > 0 && !dl.shape) fail_arg(op, "dl_tensor.shape", cat("an array of ", dl.ndim, " sizes"), "NULL");
  const DType dtype = from_dl(op, dl.dtype);
  const Device device = from_dl(op, dl.device);
  const Shape shape(dl.shape, dl.shape + dl.ndim);
  const int64_t numel = check::numel_of(op, shape, dtype);
  if (dl.strides && numel > 0) {
    const Shape compact = strides_of(shape);
    const Shape given(dl.strides, dl.strides + dl.ndim);
    for (size_t i = 0; i < shape.size(); ++i)
      if (shape[i] != 1 && given[i] != compact[i])
        fail_arg(op, "dl_tensor.strides",
                 cat("compact row-major strides ", shape_str(compact), " (any for a size-1 dimension; octet does ",
                     "not copy)"),
                 cat("strides ", shape_str(given), " for shape ", shape_str(shape)));
  }
  const size_t element = dtype_size(dtype);
  if (dl.byte_offset % element != 0)
    fail_arg(op, "dl_tensor.byte_offset", cat("a multiple of ", element, " (the size of ", dtype_name(dtype), ")"),
             cat(dl.byte_offset));
  // A null data pointer plus an offset is a small number, not memory (found by tools/fuzz-dlpack).
  if (!dl.data && dl.byte_offset != 0 && numel > 0)
    fail_arg(op, "dl_tensor.data", "a pointer to the elements",
             cat("NULL with byte_offset ", dl.byte_offset, " for ", numel, " elements"));
  uintptr_t first = 0;
  if (__builtin_add_overflow(reinterpret_cast<uintptr_t>(dl.data), dl.byte_offset, &first))
    fail_arg(op, "dl_tensor.byte_offset", "an offset within the address space",
             cat(dl.byte_offset, " after ", dl.data));
  return detail::wrap_memory(op, reinterpret_cast<void*>(first), shape, dtype, device, std::move(release));
}

// One exported tensor: the managed struct handed out, the storage reference it holds, and the
// arrays its DLTensor points at.
template <class Managed>
struct Export {
  Managed managed{};
  Tensor tensor;
  Shape shape, strides;
};

template <class Managed>
void release_export(Managed* self) {
  delete static_cast<Export<Managed>*>(self->manager_ctx);
}

template <class Managed>
Managed* export_tensor(std::string_view op, const Tensor& t) {
  check::defined(op, "t", t);
  auto owner = std::make_unique<Export<Managed>>();
  owner->tensor = t.detach();
  owner->shape = t.shape();
  owner->strides = strides_of(owner->shape);
  DLTensor& dl = owner->managed.dl_tensor;
  dl.data = t.data();
  dl.device = t.device().is_cuda() ? DLDevice{kDLCUDA, t.device().index} : DLDevice{kDLCPU, 0};
  dl.ndim = static_cast<int32_t>(t.dim());
  dl.dtype = to_dl(t.dtype());
  dl.shape = owner->shape.data();
  dl.strides = owner->strides.data();
  dl.byte_offset = 0;
  owner->managed.manager_ctx = owner.get();
  owner->managed.deleter = &release_export<Managed>;
  return &owner.release()->managed;
}

}  // namespace

DLManagedTensorVersioned* to_dlpack(const Tensor& t) {
  DLManagedTensorVersioned* managed = export_tensor<DLManagedTensorVersioned>("to_dlpack", t);
  managed->version = {1, 1};
  managed->flags = is_read_only(t) ? DLPACK_FLAG_BITMASK_READ_ONLY : 0;
  return managed;
}

DLManagedTensor* to_dlpack_legacy(const Tensor& t) {
  check::defined("to_dlpack_legacy", "t", t);
  if (is_read_only(t))
    fail_arg("to_dlpack_legacy", "t",
             "a writable tensor (the legacy DLManagedTensor has no read-only flag; use to_dlpack)",
             cat(t.str(), " imported read-only"));
  return export_tensor<DLManagedTensor>("to_dlpack_legacy", t);
}

Tensor from_dlpack(DLManagedTensorVersioned* managed) {
  constexpr const char* op = "from_dlpack";
  if (!managed) fail_arg(op, "managed", "a DLManagedTensorVersioned", "a null pointer");
  if (managed->version.major != 1)
    fail_arg(op, "managed->version", "DLPack version 1.x",
             cat("version ", managed->version.major, ".", managed->version.minor));
  Tensor t = wrap(op, managed->dl_tensor, [managed](void*) {
    if (managed->deleter) managed->deleter(managed);
  });
  t.impl()->storage->read_only = (managed->flags & DLPACK_FLAG_BITMASK_READ_ONLY) != 0;
  return t;
}

Tensor from_dlpack(DLManagedTensor* managed) {
  constexpr const char* op = "from_dlpack";
  if (!managed) fail_arg(op, "managed", "a DLManagedTensor", "a null pointer");
  return wrap(op, managed->dl_tensor, [managed](void*) {
    if (managed->deleter) managed->deleter(managed);
  });
}

bool is_read_only(const Tensor& t) {
  check::defined("is_read_only", "t", t);
  return t.impl()->storage->read_only;
}

}  // namespace octet
