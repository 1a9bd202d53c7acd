// Launchers of the optim family and the tensor table both devices share. src/optim.cpp validates
// and builds one OptimSlot per parameter that has a gradient; kernels::optim_step (CUDA) and
// cpu::optim_step (src/cpu/optim.hpp) run the same arithmetic (kernels/optim_math.cuh) on it.
// CUDA: the slots travel as kernel parameters in batches of kOptimSlots (no device table, no
// upload, nothing to synchronize, and a captured graph keeps them); per batch one launch advances
// every slot's step counter and computes its scalars, one launch updates every element: CUDA
// block i takes chunk i of the batch's concatenated chunks of kOptimChunk elements. Nothing is
// allocated; n == 0 slots still count a step. Launches are checked.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/optim_math.cuh"
#include "kernels/quant_index.cuh"
#include "octet/dtype.hpp"

namespace octet::kernels {

enum class OptimKind : int32_t {
  sgd,                 // state1: f32 momentum buffer or null
  adamw,               // state1, state2: m, v in the state dtype (f32 or bf16)
  adamw8bit_f32,       // AdamW8bit's update with f32 states (tensors below min_8bit_size)
  adamw8bit_blockwise  // state1, state2: u8 codes; absmax1, absmax2: f32 per block of kOptimBlock
};

inline constexpr int kOptimSlots = 256;       // tensors per launch (24 KiB of kernel parameters)
inline constexpr int64_t kOptimChunk = 1024;  // elements per CUDA block (4 per thread)
inline constexpr int64_t kOptimBlock = 256;   // quantization block of the 8-bit states

struct OptimSlot {
  void* param = nullptr;
  const void* grad = nullptr;
  void* state1 = nullptr;
  void* state2 = nullptr;
  float* absmax1 = nullptr;
  float* absmax2 = nullptr;
  const float* gnorm_scale = nullptr;           // null: 1
  optim_math::StepState* step_state = nullptr;  // advanced by one per step
  const double* hyper = nullptr;                // optim_math::Hyper, kHyperCount values
  int64_t numel = 0;
  int32_t vector_ok = 0;  // every pointer aligned to 4 elements: 4-element vector accesses
  int32_t pad = 0;
};

struct OptimTables {
  quant_index::Tables m;  // signed dynamic table (first moment)
  quant_index::Tables v;  // unsigned dynamic table (second moment)
};

// The 8-bit states' index lookup on the device: the codes' compact tables (quant_index.cuh
// Compact, built by quant's index LUT and checked there against closed_form), which give
// closed_form's index with one shared-memory load; m.entries == 0: closed_form over `tables`.
// The CPU reads `tables` only (closed_form).
struct OptimIndex {
  const OptimTables* tables = nullptr;
  quant_index::Compact m, v;
  const uint32_t* m_entries = nullptr;  // m_words words (a multiple of 4)
  const uint32_t* v_entries = nullptr;
  int32_t m_words = 0, v_words = 0;
};

// One step over `count` slots: param dtype f32/f16/bf16 (grads the same), state dtype f32 or bf16
// (adamw only; f32 otherwise); index: on the device (adamw8bit_blockwise only).
void optim_step(OptimKind kind, DType param_dtype, DType state_dtype, const OptimSlot* slots, int64_t count,
                const OptimIndex& index, cudaStream_t s);

// dst[0 .. kHyperCount) = values, enqueued on s (a one-thread kernel: no host memory involved, so
// it may run while the caller's values change, and a capture keeps it as a kernel node).
struct HyperValues {
  double v[optim_math::kHyperCount];
};
void write_hyper(double* dst, const HyperValues& values, cudaStream_t s);

// clip_grad_norm_ in three launches (the slots use grad and numel only; the caller groups them by
// dtype and passes each group's first partial): grad_sumsq writes one f64 sum of squares per chunk
// of kOptimChunk elements (256 lanes, lane t adds the squares of elements 4t .. 4t + 3 in order,
// then a halving tree over the lanes); grad_norm_finish sums the partials (lane t adds partials t,
// t + 256, ... in order, then the tree) and writes out[0] = sqrt(total) (f32) and
// out[1] = min(1, max_norm / (out[0] + 1e-6)) (f32 operations; NaN stays NaN); grad_scale
// multiplies every grad by out[1] (f32 product rounded to the grad's dtype) unless it is exactly 1.
inline int64_t chunks_of(int64_t numel) { return (numel + kOptimChunk - 1) / kOptimChunk; }
void grad_sumsq(DType grad_dtype, const OptimSlot* slots, int64_t count, double* partials, cudaStream_t s);
void grad_norm_finish(const double* partials, int64_t count, float max_norm, float* out, cudaStream_t s);
void grad_scale(DType grad_dtype, const OptimSlot* slots, int64_t count, const float* coef, cudaStream_t s);

}  // namespace octet::kernels
