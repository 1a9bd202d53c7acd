// Percentile gradient clipping (bitsandbytes' percentile_clipping) with the history kept on the
// device and nothing read back: the whole call can be captured in a CUDA graph.
// gnorm_vec holds the last 100 squared gradient norms (f32 [100], on grad's device).
#pragma once
#include "octet/tensor.hpp"

namespace octet {

struct ClipResult {
  Tensor gnorm;       // f32 [] : this step's gradient norm
  Tensor clip_value;  // f32 [] : sqrt of the percentile-th smallest squared norm in the history
  Tensor scale;       // f32 [] : 1 when gnorm <= clip_value, else clip_value / gnorm
};

// step >= 1 (step 1 adds the first squared norm into all 100 slots), percentile in [0, 99].
ClipResult percentile_clipping(const Tensor& grad, Tensor& gnorm_vec, int64_t step, int percentile = 5);

}  // namespace octet
