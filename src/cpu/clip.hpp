// CPU reference of the clip family (same names as kernels/clip.cuh, plain C++). The caller
// (src/clip.cpp) validates arguments; step >= 1 here.
#pragma once
#include <cstdint>

#include "octet/dtype.hpp"

namespace octet::cpu {

// Sum of float(x[i])^2 in f64 (each square exact), over fixed 64K-element chunks combined in
// order: deterministic on every machine.
double sum_squares(DType t, const void* x, int64_t n);
// One clipping step given the squared norm: updates gnorm_vec (f32 [100]), writes the outputs.
void clip_finish(double sumsq, float* gnorm_vec, int64_t step, int percentile, float* gnorm, float* clip_value,
                 float* scale);
// x *= scale (f32 product, rounded to t); nothing is written when scale == 1.
void scale_by(DType t, void* x, int64_t n, float scale);

}  // namespace octet::cpu
