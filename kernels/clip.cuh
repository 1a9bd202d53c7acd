// CUDA launchers of the clip family (src/clip.cpp validates; launchers assume valid input).
// percentile_clipping is a deterministic sum of squares (fixed grid as a function of dtype and n,
// fixed combination order, no atomics) followed by one single-block finish that updates the
// history, ranks the 100 values and writes gnorm, clip value and scale. Small gradients take a
// single-kernel path. Nothing is read back; nothing is allocated here.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "octet/dtype.hpp"

namespace octet::kernels {

struct ClipStep {
  float* gnorm_vec;        // f32 [100]
  int64_t step;            // used when step_counter is null
  int64_t* step_counter;   // device i64: read, used, then advanced by one (null: use `step`)
  int percentile;          // 0..99
  float* gnorm;            // outputs, f32 scalars on the device
  float* clip_value;
  float* scale;
};

// f64 partial sums the large-gradient path needs (0: single-kernel path).
int64_t clip_partials(DType t, int64_t n);
// partials: clip_partials(t, n) doubles of scratch on the device (ignored when 0).
void percentile_clipping(DType t, const void* grad, int64_t n, double* partials, const ClipStep& a, cudaStream_t s);
// x *= *scale (f32 product, rounded to t); returns at once when *scale == 1.
void scale_by(DType t, void* x, int64_t n, const float* scale, cudaStream_t s);

}  // namespace octet::kernels
