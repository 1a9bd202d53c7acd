// Device probes of CUDA's own conversion intrinsics, used by the conversion tests to check the
// host conversions (src/convert.cpp) bit for bit on a GPU. Tensor::to(dtype) itself uses
// kernels::convert in ops.cu.
#include "kernels/common.cuh"
#include "kernels/convert.cuh"

namespace octet::kernels {
namespace {

__global__ void probe_from_float(const float* in, uint16_t* f16, uint16_t* bf16, uint8_t* e4m3, uint8_t* e5m2, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float x = in[i];
    f16[i] = __half_as_ushort(__float2half_rn(x));
    bf16[i] = __bfloat16_as_ushort(__float2bfloat16_rn(x));
    e4m3[i] = __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3);
    e5m2[i] = __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E5M2);
  }
}

__global__ void probe_to_float(const uint16_t* bits, float* from_f16, float* from_bf16, float* from_e4m3, float* from_e5m2) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= 65536) return;
  const uint16_t b = bits[i];
  from_f16[i] = __half2float(__ushort_as_half(b));
  from_bf16[i] = __bfloat162float(__ushort_as_bfloat16(b));
  if (i < 256) {
    __nv_fp8_e4m3 a; a.__x = static_cast<__nv_fp8_storage_t>(b);
    __nv_fp8_e5m2 c; c.__x = static_cast<__nv_fp8_storage_t>(b);
    from_e4m3[i] = static_cast<float>(a);
    from_e5m2[i] = static_cast<float>(c);
  }
}

}  // namespace

void probe_conversions_from_float(const float* in, uint16_t* f16, uint16_t* bf16, uint8_t* e4m3, uint8_t* e5m2,
                                  int64_t n, cudaStream_t s) {
  if (n == 0) return;
  probe_from_float<<<grid_for(n, 256), 256, 0, s>>>(in, f16, bf16, e4m3, e5m2, n);
  OCTET_LAUNCH_CHECK("probe_from_float");
}

void probe_conversions_to_float(const uint16_t* bits, float* from_f16, float* from_bf16, float* from_e4m3,
                                float* from_e5m2, cudaStream_t s) {
  probe_to_float<<<256, 256, 0, s>>>(bits, from_f16, from_bf16, from_e4m3, from_e5m2);
  OCTET_LAUNCH_CHECK("probe_to_float");
}

}  // namespace octet::kernels
