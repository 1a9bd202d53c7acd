// CPU reference of the optim family: the launchers of kernels/optim.cuh as plain loops over the
// same slots, with the same arithmetic (kernels/optim_math.cuh), the same chunks for the gradient
// norm and the same index rule for the 8-bit states (quant_index::closed_form), so parameters,
// states and norms have the bits of the CUDA path. src/optim.cpp validates; pointers are host
// pointers here.
#pragma once
#include <cstdint>

#include "kernels/optim.cuh"

namespace octet::cpu {

void optim_step(kernels::OptimKind kind, DType param_dtype, DType state_dtype, const kernels::OptimSlot* slots,
                int64_t count, const kernels::OptimTables* tables);  // tables: host
void grad_sumsq(DType grad_dtype, const kernels::OptimSlot* slots, int64_t count, double* partials);
void grad_norm_finish(const double* partials, int64_t count, float max_norm, float* out);
void grad_scale(DType grad_dtype, const kernels::OptimSlot* slots, int64_t count, const float* coef);

}  // namespace octet::cpu
