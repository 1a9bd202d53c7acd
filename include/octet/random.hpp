// Random tensors from cuRAND's Philox generator: the device generator on CUDA, cuRAND's host
// generator on the CPU. For one seed the uniform values are bit-identical on both devices;
// normal values agree to a few ulp (the device uses its own log/sincos).
// Each call consumes numel values of the global stream (seed, offset), so a sequence of calls
// after manual_seed(s) is reproducible on either device.
// Threads: every function here may be called from any thread. Each rand/randn call takes the next
// numel values of the stream under one lock (no value is drawn twice, none is skipped), but which
// piece a thread gets depends on the order in which the calls happen to run: for values that do
// not depend on scheduling, draw on one thread (or give each thread its inputs).
#pragma once
#include <cstdint>

#include "octet/tensor.hpp"

namespace octet {

void manual_seed(uint64_t seed);

// Where the global stream stands: rng_state() after a sequence of draws, set_rng_state() later
// (any process), and the draws that follow are those that followed the saved point.
struct RngState {
  uint64_t seed = 0;
  uint64_t offset = 0;  // values drawn since manual_seed(seed)
  bool operator==(const RngState&) const = default;
};
RngState rng_state();
void set_rng_state(const RngState& state);
// Uniform on (0, 1] (cuRAND's convention: 0 never appears, 1 can).
Tensor rand(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
// Standard normal.
Tensor randn(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());

}  // namespace octet
