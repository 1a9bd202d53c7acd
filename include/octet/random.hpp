// Random tensors from cuRAND's Philox generator: the device generator on CUDA, cuRAND's host
// generator on the CPU. For one seed the uniform values are bit-identical on both devices;
// normal values agree to a few ulp (the device uses its own log/sincos).
// Each call consumes numel values of the global stream (seed, offset), so a sequence of calls
// after manual_seed(s) is reproducible on either device.
#pragma once
#include <cstdint>

#include "octet/tensor.hpp"

namespace octet {

void manual_seed(uint64_t seed);
// Uniform on (0, 1] (cuRAND's convention: 0 never appears, 1 can).
Tensor rand(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
// Standard normal.
Tensor randn(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());

}  // namespace octet
