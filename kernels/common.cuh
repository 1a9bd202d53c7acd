// Device-side helpers shared by the kernel families: dtype -> CUDA type dispatch, float
// load/store with CUDA's rounding intrinsics, max |x| as ordered bits (VecAbsMax), grid sizing.
// Only included from .cu files.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "octet/dtype.hpp"
#include "octet/error.hpp"
#include "src/cpu/fp8_gemm.hpp"  // amax_bits
#include "src/cuda_check.hpp"

namespace octet::kernels {

template <class T> struct type_tag { using type = T; };

__device__ __forceinline__ float load_f32(float v) { return v; }
__device__ __forceinline__ float load_f32(double v) { return static_cast<float>(v); }
__device__ __forceinline__ float load_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float load_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float load_f32(__nv_fp8_e4m3 v) { return static_cast<float>(v); }
__device__ __forceinline__ float load_f32(__nv_fp8_e5m2 v) { return static_cast<float>(v); }
__device__ __forceinline__ float load_f32(uint8_t v) { return v; }
__device__ __forceinline__ float load_f32(int32_t v) { return static_cast<float>(v); }
__device__ __forceinline__ float load_f32(int64_t v) { return static_cast<float>(v); }

template <class T> __device__ __forceinline__ double load_f64(T v) { return load_f32(v); }
__device__ __forceinline__ double load_f64(double v) { return v; }
__device__ __forceinline__ double load_f64(int32_t v) { return v; }
__device__ __forceinline__ double load_f64(int64_t v) { return static_cast<double>(v); }

template <class I> __device__ __forceinline__ I saturate_int(double v) {
  constexpr double lo = static_cast<double>(I(~0) < 0 ? (sizeof(I) == 8 ? INT64_MIN : (sizeof(I) == 4 ? INT32_MIN : 0)) : 0);
  constexpr double hi = static_cast<double>(sizeof(I) == 8 ? INT64_MAX : (sizeof(I) == 4 ? INT32_MAX : 255));
  if (v != v) return 0;
  if (v <= lo) return static_cast<I>(lo);
  if (v >= hi) return sizeof(I) == 8 ? static_cast<I>(INT64_MAX) : static_cast<I>(hi);
  return static_cast<I>(v);
}

// Same rules as the host store<T> (src/cpu/element.hpp).
template <class T> __device__ __forceinline__ T store(double v) {
  if constexpr (std::is_same_v<T, double>) return v;
  else if constexpr (std::is_same_v<T, float>) return static_cast<float>(v);
  else if constexpr (std::is_same_v<T, __half>) return __float2half_rn(static_cast<float>(v));
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return __float2bfloat16_rn(static_cast<float>(v));
  else if constexpr (std::is_same_v<T, __nv_fp8_e4m3>) {
    __nv_fp8_e4m3 r; r.__x = __nv_cvt_float_to_fp8(static_cast<float>(v), __NV_SATFINITE, __NV_E4M3); return r;
  } else if constexpr (std::is_same_v<T, __nv_fp8_e5m2>) {
    __nv_fp8_e5m2 r; r.__x = __nv_cvt_float_to_fp8(static_cast<float>(v), __NV_SATFINITE, __NV_E5M2); return r;
  } else return saturate_int<T>(v);
}
// Float fast path (no double round trip) for f32/f16/bf16/fp8 stores.
template <class T> __device__ __forceinline__ T store_f32(float v) {
  if constexpr (std::is_same_v<T, float>) return v;
  else if constexpr (std::is_same_v<T, __half>) return __float2half_rn(v);
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return __float2bfloat16_rn(v);
  else return store<T>(static_cast<double>(v));
}

template <class F> decltype(auto) visit_dtype(DType t, F&& f) {
  switch (t) {
    case DType::f32: return f(type_tag<float>{});
    case DType::f64: return f(type_tag<double>{});
    case DType::f16: return f(type_tag<__half>{});
    case DType::bf16: return f(type_tag<__nv_bfloat16>{});
    case DType::u8: return f(type_tag<uint8_t>{});
    case DType::i32: return f(type_tag<int32_t>{});
    case DType::i64: return f(type_tag<int64_t>{});
    case DType::f8_e4m3: return f(type_tag<__nv_fp8_e4m3>{});
    case DType::f8_e5m2: return f(type_tag<__nv_fp8_e5m2>{});
  }
  fail("visit_dtype", "unknown dtype");
}

template <class F> decltype(auto) visit_float(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::f32: return f(type_tag<float>{});
    case DType::f64: return f(type_tag<double>{});
    case DType::f16: return f(type_tag<__half>{});
    case DType::bf16: return f(type_tag<__nv_bfloat16>{});
    default: fail(op, cat("dtype ", dtype_name(t), " is not supported here"));
  }
}

// Max of v over the block (any block shape, all threads must call it); valid in thread 0.
__device__ __forceinline__ uint32_t block_max_u32(uint32_t v) {
  __shared__ uint32_t part[32];
  const unsigned tid = threadIdx.y * blockDim.x + threadIdx.x, warps = (blockDim.x * blockDim.y + 31) / 32;
  v = __reduce_max_sync(0xFFFFFFFFu, v);
  if (tid % 32 == 0) part[tid / 32] = v;
  __syncthreads();
  uint32_t w = 0u;
  if (tid < 32) w = __reduce_max_sync(0xFFFFFFFFu, tid < warps ? part[tid] : 0u);
  return w;
}

// |v| as the ordered bits of fp8_amax (amax_bits); never called for f64.
template <class T> __device__ __forceinline__ uint32_t abs_bits(T v) {
  if constexpr (std::is_same_v<T, double>) return 0u;
  else return amax_bits(__float_as_uint(load_f32(v)));
}

// The amax of the vector path, kept cheaply: the bits of |x| order like |x| (NaNs of any payload
// above Inf), so an integer max of the bits with the sign cleared is the max, and amax_bits is
// applied once at the end. 16-bit types keep two halfword maxima per register (one and + one
// SIMD max per two elements). Same bits as abs_bits per element.
template <class T> struct VecAbsMax {
  uint32_t raw = 0;
  __device__ __forceinline__ void add(const uint4& v) {
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      if constexpr (sizeof(T) == 2) raw = __vmaxu2(raw, w[k] & 0x7FFF7FFFu);
      else raw = max(raw, w[k] & 0x7FFFFFFFu);
    }
  }
  __device__ __forceinline__ uint32_t ordered_bits() const {
    if constexpr (std::is_same_v<T, __half>) {
      return abs_bits(__ushort_as_half(static_cast<unsigned short>(max(raw & 0xFFFFu, raw >> 16))));
    } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
      return amax_bits(max(raw & 0xFFFFu, raw >> 16) << 16);
    } else {
      return amax_bits(raw);
    }
  }
};

// Grid for a grid-stride loop over n items: at most 65535*? blocks; 64-bit safe.
inline unsigned grid_for(int64_t n, int threads, int64_t max_blocks = 4096) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > max_blocks) b = max_blocks;
  return static_cast<unsigned>(b);
}

}  // namespace octet::kernels
