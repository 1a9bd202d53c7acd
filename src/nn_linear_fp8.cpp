// nn::LinearFP8: the real FP8 tensor-core layer on matmul_fp8 (fp8_gemm.hpp), HYBRID format.
// Row-major shapes: x2 (M, K), W (N, K), y (M, N), dY (M, N). The three GEMMs map onto
// matmul_fp8's "a b^T with both operands K-contiguous":
//   y      = x2 W^T       a = x2_q (M, K)      b = W_q (N, K)
//   grad_x = dY W         a = dY_q (M, N)      b = W_q^T (K, N)
//   grad_W = dY^T x2      a = dY_q^T (N, M)    b = x2_q^T (K, M)
// so the forward casts x with its transpose (when W needs a gradient), the weight with its
// transpose (when x does), and the backward casts dY with its transpose (when W does) and its
// column sums (grad_b, when the bias needs a gradient), each in one pass.
#include <cmath>

#include "octet/autograd.hpp"
#include "octet/nn.hpp"
#include "octet/ops.hpp"
#include "src/check.hpp"

namespace octet::nn {

struct LinearFP8::State {
  // FP8 weight cache; `source` shares the weight's storage so the key cannot be reused.
  Tensor source, w, w_t;
  Fp8Scale w_scale;
  int64_t offset = 0;
  uint64_t version = 0;
  // Delayed scaling of x and dY.
  Tensor x_history, g_history;
  Fp8Scale x_scale, g_scale;
};

namespace {

constexpr const char* kOp = "LinearFP8";

// Current scaling: the scale from x's own amax, then one cast pass.
Fp8Cast cast_current(const Tensor& x, DType fp8, bool transpose, Fp8Scale& scale, bool sums = false) {
  scale = fp8_current_scale(fp8_amax(x), fp8);
  return cast_to_fp8(x, fp8, scale.scale, {}, transpose, sums);
}

// Delayed scaling: the scale from the history, then a cast that records this amax in slot 0.
Fp8Cast cast_delayed(const Tensor& x, DType fp8, bool transpose, Tensor& history, Fp8Scale& state,
                     const DelayedScaling& recipe, bool sums = false) {
  if (!history.defined() || history.numel() != recipe.history_len || history.device() != x.device()) {
    history = Tensor::zeros({recipe.history_len}, DType::f32, x.device());
    state = fp8_unit_scale(x.device());
  }
  state = fp8_delayed_scale(history, state, fp8, recipe);
  return cast_to_fp8(x, fp8, state.scale, history, transpose, sums);
}

}  // namespace

LinearFP8::LinearFP8(int64_t in, int64_t out, bool with_bias, Device device, DType dtype)
    : Linear(in, out, with_bias, device, dtype), state_(std::make_shared<State>()) {
  if (dtype != DType::f32 && dtype != DType::bf16 && dtype != DType::f16)
    fail_arg(kOp, "dtype", "f32, bf16 or f16", dtype_name(dtype));
}

void LinearFP8::invalidate() {
  state_->source = Tensor();
  state_->w = state_->w_t = Tensor();
}

Tensor LinearFP8::forward(const Tensor& x) {
  check::defined(kOp, "x", x);
  check::dtype_is(kOp, "x", x, weight.dtype());
  check::device_is(kOp, "x", x, weight.device());
  check::dim_in(kOp, "x", x, 1, 8);
  if (x.size(-1) != in_features)
    fail_arg(kOp, "x", cat("shape (..., ", in_features, ")"), cat("shape ", shape_str(x.shape())));
  const int64_t k = in_features, n = out_features;
  const int64_t rows = shape_numel(Shape(x.shape().begin(), x.shape().end() - 1));
  Shape out_shape(x.shape().begin(), x.shape().end() - 1);
  out_shape.push_back(n);
  const Device dev = weight.device();
  const bool fp8 = dev.is_cpu() || crossover_macs <= 0 ||
                   (rows * n * k >= crossover_macs && fp8_tensor_cores(dev.index));
  last_fp8_ = fp8;
  if (!fp8) {  // below the crossover: exactly nn::Linear's forward (no extra reshape nodes for 2-D/3-D x)
    if (x.dim() == 2 || x.dim() == 3) return linear(x, weight, bias);
    return linear(x.reshape({rows, k}), weight, bias).reshape(out_shape);
  }

  const bool need_gx = autograd::needs_grad({x}), need_gw = autograd::needs_grad({weight});
  const bool need_gb = bias.defined() && autograd::needs_grad({bias});
  const Tensor x2 = x.detach().reshape({rows, k});
  State& st = *state_;
  const bool stale = !st.source.defined() || st.source.impl()->storage != weight.impl()->storage ||
                     st.offset != weight.impl()->offset || st.version != weight.impl()->storage->version ||
                     st.source.shape() != weight.shape() || st.source.dtype() != weight.dtype() ||
                     (need_gx && !st.w_t.defined());
  if (stale) {
    Fp8Cast wq = cast_current(weight.detach(), DType::f8_e4m3, need_gx, st.w_scale);
    st.source = weight.detach();
    st.offset = weight.impl()->offset;
    st.version = weight.impl()->storage->version;
    st.w = wq.data;
    st.w_t = wq.transposed;
  }
  Fp8Scale x_scale;
  Fp8Cast xq = recipe == Fp8Recipe::current
                   ? cast_current(x2, DType::f8_e4m3, need_gw, x_scale)
                   : cast_delayed(x2, DType::f8_e4m3, need_gw, st.x_history, st.x_scale, delayed);
  if (recipe == Fp8Recipe::delayed) x_scale = st.x_scale;
  const Tensor bias_d = bias.defined() ? bias.detach() : Tensor();
  Tensor y = matmul_fp8(xq.data, st.w, x_scale.scale_inv, st.w_scale.scale_inv, weight.dtype(), bias_d,
                        fast_accum_forward)
                 .reshape(out_shape);
  if (!need_gx && !need_gw && !need_gb) return y;

  std::vector<Tensor> inputs{x, weight};
  if (bias.defined()) inputs.push_back(bias);
  auto state = state_;
  const Tensor w_t = need_gx ? st.w_t : Tensor(), w_sinv = st.w_scale.scale_inv;
  const Tensor x_t = xq.transposed, x_sinv = x_scale.scale_inv;
  const Shape x_shape = x.shape();
  const DType dtype = weight.dtype();
  const Fp8Recipe rec = recipe;
  const DelayedScaling del = delayed;
  const bool fast = fast_accum_backward, has_bias = bias.defined();
  autograd::record(kOp, std::move(inputs), y, [=](const Tensor& g) {
    const Tensor g2 = g.reshape({rows, n});
    Fp8Scale g_scale;
    Fp8Cast gq = rec == Fp8Recipe::current
                     ? cast_current(g2, DType::f8_e5m2, need_gw, g_scale, need_gb)
                     : cast_delayed(g2, DType::f8_e5m2, need_gw, state->g_history, state->g_scale, del, need_gb);
    if (rec == Fp8Recipe::delayed) g_scale = state->g_scale;
    std::vector<Tensor> grads(has_bias ? 3 : 2);
    if (need_gx) grads[0] = matmul_fp8(gq.data, w_t, g_scale.scale_inv, w_sinv, dtype, {}, fast).reshape(x_shape);
    if (need_gw) grads[1] = matmul_fp8(gq.transposed, x_t, g_scale.scale_inv, x_sinv, dtype, {}, fast);
    if (need_gb) grads[2] = gq.column_sums;
    return grads;
  });
  return y;
}

}  // namespace octet::nn
