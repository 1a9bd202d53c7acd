// Launchers that run CUDA's conversion intrinsics on the device, for the conversion tests.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace octet::kernels {
// For each float: f16, bf16 (RNE), e4m3 and e5m2 (RNE, SATFINITE) bits.
void probe_conversions_from_float(const float* in, uint16_t* f16, uint16_t* bf16, uint8_t* e4m3, uint8_t* e5m2,
                                  int64_t n, cudaStream_t s);
// For all 65536 patterns: f16 and bf16 to float; for the first 256: e4m3 and e5m2 to float.
void probe_conversions_to_float(const uint16_t* bits, float* from_f16, float* from_bf16, float* from_e4m3,
                                float* from_e5m2, cudaStream_t s);
}  // namespace octet::kernels
