// The DLPack 1.1 ABI (data types, devices, DLTensor, the legacy DLManagedTensor and the versioned
// DLManagedTensorVersioned of DLPack 1.x), declared from the published DLPack specification with
// its names and layout, in the global namespace, so that tensors pass to and from every other
// library that speaks DLPack (PyTorch, CuPy, JAX, NumPy, TVM) without a conversion.
// Interplay with an installed <dlpack/dlpack.h>: both use the include guard DLPACK_DLPACK_H_.
// Included first, a dlpack.h of version 1.0 or later is used as it is (nothing is redefined; 1.0
// lacks the names of the float8 codes, whose values octet uses regardless); an older one, which
// has no DLManagedTensorVersioned, stops the build. Included after this header, dlpack.h is
// skipped: include it first to get the additions of DLPack versions after 1.1.
#pragma once

#ifndef DLPACK_DLPACK_H_
#define DLPACK_DLPACK_H_

#include <stddef.h>
#include <stdint.h>

#define DLPACK_MAJOR_VERSION 1
#define DLPACK_MINOR_VERSION 1

#ifdef __cplusplus
#define DLPACK_EXTERN_C extern "C"
#else
#define DLPACK_EXTERN_C
#endif
#ifndef DLPACK_DLL
#define DLPACK_DLL
#endif

#ifdef __cplusplus
extern "C" {
#endif

// The version of the ABI a managed tensor follows: a consumer refuses a major it does not know;
// minor versions add to the ABI without changing what is there.
typedef struct {
  uint32_t major;
  uint32_t minor;
} DLPackVersion;

// Where the data lives (DLDevice::device_type).
#ifdef __cplusplus
typedef enum : int32_t {
#else
typedef enum {
#endif
  kDLCPU = 1,
  kDLCUDA = 2,
  kDLCUDAHost = 3,  // pinned host memory (cudaMallocHost)
  kDLOpenCL = 4,
  kDLVulkan = 7,
  kDLMetal = 8,
  kDLVPI = 9,
  kDLROCM = 10,
  kDLROCMHost = 11,
  kDLExtDev = 12,
  kDLCUDAManaged = 13,  // CUDA managed (unified) memory
  kDLOneAPI = 14,
  kDLWebGPU = 15,
  kDLHexagon = 16,
  kDLMAIA = 17,
} DLDeviceType;

typedef struct {
  DLDeviceType device_type;
  int32_t device_id;  // the device's ordinal (0 for the CPU)
} DLDevice;

// The kind of an element (DLDataType::code).
typedef enum {
  kDLInt = 0U,
  kDLUInt = 1U,
  kDLFloat = 2U,  // IEEE binary floating point
  kDLOpaqueHandle = 3U,
  kDLBfloat = 4U,
  kDLComplex = 5U,
  kDLBool = 6U,
  // The 8-, 6- and 4-bit floating-point formats added by DLPack 1.1 (names as in the OCP/ml_dtypes
  // convention: "fn" has no infinities, "fnuz" no infinities and no negative zero).
  kDLFloat8_e3m4 = 7U,
  kDLFloat8_e4m3 = 8U,
  kDLFloat8_e4m3b11fnuz = 9U,
  kDLFloat8_e4m3fn = 10U,
  kDLFloat8_e4m3fnuz = 11U,
  kDLFloat8_e5m2 = 12U,
  kDLFloat8_e5m2fnuz = 13U,
  kDLFloat8_e8m0fnu = 14U,
  kDLFloat6_e2m3fn = 15U,
  kDLFloat6_e3m2fn = 16U,
  kDLFloat4_e2m1fn = 17U,
} DLDataTypeCode;

// An element type: code (a DLDataTypeCode), bits per lane, lanes per element (1 for scalars).
typedef struct {
  uint8_t code;
  uint8_t bits;
  uint16_t lanes;
} DLDataType;

// A tensor's description, not its ownership. The first element lies at (char*)data + byte_offset.
// strides count elements, not bytes; NULL strides mean compact row-major.
typedef struct {
  void* data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;
  int64_t* strides;
  uint64_t byte_offset;
} DLTensor;

// The pre-1.0 managed tensor: the consumer calls deleter(self) (when not NULL) once it is done.
typedef struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(struct DLManagedTensor* self);
} DLManagedTensor;

// Bits of DLManagedTensorVersioned::flags.
#define DLPACK_FLAG_BITMASK_READ_ONLY (1UL << 0UL)  // the consumer must not write the data
#define DLPACK_FLAG_BITMASK_IS_COPIED (1UL << 1UL)  // the producer made a copy for this export
#define DLPACK_FLAG_BITMASK_IS_SUBBYTE_TYPE_PADDED (1UL << 2UL)  // sub-byte elements one per byte

// The managed tensor of DLPack 1.x: version first, so a consumer can check it before it reads on.
typedef struct DLManagedTensorVersioned {
  DLPackVersion version;
  void* manager_ctx;
  void (*deleter)(struct DLManagedTensorVersioned* self);
  uint64_t flags;
  DLTensor dl_tensor;
} DLManagedTensorVersioned;

#ifdef __cplusplus
}  // extern "C"
#endif

#else  // a dlpack.h was included before this header

#if !defined(DLPACK_MAJOR_VERSION) || DLPACK_MAJOR_VERSION < 1
#error "octet needs DLPack 1.0 or later (DLManagedTensorVersioned); an older dlpack.h was included before octet"
#endif

#endif  // DLPACK_DLPACK_H_
