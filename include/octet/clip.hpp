// Percentile gradient clipping (bitsandbytes' percentile_clipping) with the history kept on the
// device and nothing read back. gnorm_vec holds the squared gradient norms of the last 100 steps
// (f32 [100], on grad's device). Each call, for step s >= 1:
//   slot s % 100 is cleared and ||grad||^2 is added into it; step 1 adds it into all 100 slots
//   (only slot 1 is cleared: the others become old + ||grad||^2, as bitsandbytes does);
//   gnorm = sqrt(gnorm_vec[s % 100]); clip_value = sqrt(sorted(gnorm_vec)[percentile]);
//   scale = clip_value / gnorm when gnorm > clip_value, else 1.
// Squares are summed in f32 per CUDA thread and combined in f64 in a fixed order: the same input
// gives the same bits on every run. Not differentiable (outputs never require grad).
//
// Two forms:
//  - percentile_clipping(grad, gnorm_vec, step): host step, fresh output scalars (eager use).
//  - percentile_clipping(grad, state): everything in a ClipState on the device (history, step
//    counter, preallocated outputs). The call allocates nothing for gradients up to 8192 elements
//    (f32; 16384 for f16/bf16) and only stream-ordered scratch above that, so it can be captured
//    in a CUDA graph on the current stream (octet::set_current_stream) and replayed: each replay
//    uses state.step, then advances it by one, and rewrites state.result in place.
// An optimizer applies the result with scale_by_(grad, result.scale).
#pragma once
#include "octet/tensor.hpp"

namespace octet {

struct ClipResult {
  Tensor gnorm;       // f32 [] : this step's gradient norm
  Tensor clip_value;  // f32 [] : sqrt of the percentile-th smallest squared norm in the history
  Tensor scale;       // f32 [] : 1 when gnorm <= clip_value, else clip_value / gnorm
};

// step >= 1 (step 1 adds the first squared norm into all 100 slots), percentile in [0, 99].
// grad: f32, f16 or bf16, any shape (empty -> norm 0). Returns three fresh device scalars.
ClipResult percentile_clipping(const Tensor& grad, Tensor& gnorm_vec, int64_t step, int percentile = 5);

// Clipping state that lives on one device; every member may be replaced by the caller with
// tensors of the same dtype, shape and device (e.g. to resume training at a given step).
struct ClipState {
  Tensor gnorm_vec;   // f32 [100] : squared norms (zeros from create)
  Tensor step;        // i64 []    : the step the next call uses; each call advances it by one
  ClipResult result;  // f32 [] x3 : written by every call (same storage for the state's lifetime)

  // first_step >= 1.
  static ClipState create(Device device, int64_t first_step = 1);
};

// One step on the state: reads state.step, updates state.gnorm_vec, writes state.result and
// advances state.step, all enqueued on the device's current stream. Returns state.result.
// A step < 1 found in state.step throws on the CPU; on CUDA (where reading it would need a host
// sync) it makes gnorm, clip_value and scale NaN and leaves the history and step unchanged.
const ClipResult& percentile_clipping(const Tensor& grad, ClipState& state, int percentile = 5);

// grad *= scale in place (f32 product, rounded to grad's dtype), scale an f32 [] tensor on grad's
// device, e.g. ClipResult::scale. Nothing is written when scale is exactly 1. grad: f32/f16/bf16,
// and must not require grad while grad mode is on; scale must not lie inside grad's memory. Counts
// as an in-place write of grad's storage (Storage::version).
void scale_by_(const Tensor& grad, const Tensor& scale);

}  // namespace octet
