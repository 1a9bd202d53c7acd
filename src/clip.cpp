// Dispatch and validation of the clip family (clip.hpp): percentile_clipping in its eager and
// ClipState forms, and scale_by_. The three output scalars of one call share one f32 [3]
// allocation (element views), so a call allocates at most that and the f64 partials.
#include "octet/clip.hpp"

#include "kernels/clip.cuh"
#include "octet/autograd.hpp"
#include "src/check.hpp"
#include "src/cpu/clip.hpp"
#include "src/runtime_internal.hpp"

namespace octet {
namespace {

constexpr const char* kOp = "percentile_clipping";
constexpr int64_t kHistory = 100;

void check_grad(const Tensor& grad, const Tensor& gnorm_vec, std::string_view vec_arg, int percentile) {
  check::dtype_in(kOp, "grad", grad, {DType::f32, DType::f16, DType::bf16});
  check::usable(kOp, grad.device());
  check::dtype_is(kOp, vec_arg, gnorm_vec, DType::f32);
  check::shape_is(kOp, vec_arg, gnorm_vec, {kHistory});
  check::device_is(kOp, vec_arg, gnorm_vec, grad.device());
  check::writable(kOp, vec_arg, gnorm_vec);
  if (percentile < 0 || percentile >= kHistory)
    fail_arg(kOp, "percentile", "an index 0 .. 99 into the 100 sorted squared norms", cat(percentile));
}

void check_scalar(std::string_view arg, const Tensor& t, DType dtype, Device device) {
  check::dtype_is(kOp, arg, t, dtype);
  check::shape_is(kOp, arg, t, {});
  check::device_is(kOp, arg, t, device);
  check::writable(kOp, arg, t);
}

// Element i of buf as a 0-dim tensor sharing buf's storage.
Tensor element(const Tensor& buf, int64_t i) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = buf.impl()->storage;
  impl->dtype = buf.dtype();
  impl->offset = buf.impl()->offset + i;
  return Tensor(std::move(impl));
}

ClipResult scalars(Device device) {
  Tensor buf = Tensor::empty({3}, DType::f32, device);
  return {element(buf, 0), element(buf, 1), element(buf, 2)};
}

// One step on either device; a defined step_counter (i64 [] on grad's device) replaces `step`
// and is advanced.
void run(const Tensor& grad, Tensor& gnorm_vec, int64_t step, const Tensor& step_counter, int percentile,
         const ClipResult& out) {
  float* vec = gnorm_vec.data_ptr<float>();
  float* gnorm = out.gnorm.data_ptr<float>();
  float* clip = out.clip_value.data_ptr<float>();
  float* scale = out.scale.data_ptr<float>();
  if (grad.device().is_cpu()) {
    int64_t* counter = step_counter.defined() ? step_counter.data_ptr<int64_t>() : nullptr;
    if (counter) step = *counter;
    if (step < 1) fail_arg(kOp, counter ? "state.step" : "step", "a step >= 1", cat(step));
    cpu::clip_finish(cpu::sum_squares(grad.dtype(), grad.data(), grad.numel()), vec, step, percentile, gnorm,
                     clip, scale);
    if (counter) *counter = step + 1;
    return;
  }
  detail::DeviceGuard g(grad.device());
  const int64_t count = kernels::clip_partials(grad.dtype(), grad.numel());
  Tensor partials = count ? Tensor::empty({count}, DType::f64, grad.device()) : Tensor();
  const kernels::ClipStep a{vec, step, step_counter.defined() ? step_counter.data_ptr<int64_t>() : nullptr,
                            percentile, gnorm, clip, scale};
  kernels::percentile_clipping(grad.dtype(), grad.data(), grad.numel(),
                               count ? partials.data_ptr<double>() : nullptr, a, detail::stream(grad.device()));
}

}  // namespace

ClipResult percentile_clipping(const Tensor& grad, Tensor& gnorm_vec, int64_t step, int percentile) {
  check_grad(grad, gnorm_vec, "gnorm_vec", percentile);
  if (step < 1) fail_arg(kOp, "step", "a step >= 1 (bitsandbytes counts steps from 1)", cat(step));
  ClipResult out = scalars(grad.device());
  run(grad, gnorm_vec, step, Tensor(), percentile, out);
  return out;
}

ClipState ClipState::create(Device device, int64_t first_step) {
  if (first_step < 1) fail_arg("ClipState::create", "first_step", "a step >= 1", cat(first_step));
  return {Tensor::zeros({kHistory}, DType::f32, device), Tensor::full({}, double(first_step), DType::i64, device),
          scalars(device)};
}

const ClipResult& percentile_clipping(const Tensor& grad, ClipState& state, int percentile) {
  check_grad(grad, state.gnorm_vec, "state.gnorm_vec", percentile);
  const Device d = grad.device();
  check_scalar("state.step", state.step, DType::i64, d);
  check_scalar("state.result.gnorm", state.result.gnorm, DType::f32, d);
  check_scalar("state.result.clip_value", state.result.clip_value, DType::f32, d);
  check_scalar("state.result.scale", state.result.scale, DType::f32, d);
  run(grad, state.gnorm_vec, 0, state.step, percentile, state.result);
  return state.result;
}

void scale_by_(const Tensor& grad, const Tensor& scale) {
  constexpr const char* op = "scale_by_";
  check::dtype_in(op, "grad", grad, {DType::f32, DType::f16, DType::bf16});
  check::usable(op, grad.device());
  check::dtype_is(op, "scale", scale, DType::f32);
  check::shape_is(op, "scale", scale, {});
  check::device_is(op, "scale", scale, grad.device());
  autograd::refuse(op, {grad});
  autograd::mark_inplace(op, "grad", grad);  // retires an amax hint of grad (src/amax_hint.hpp)
  if (grad.device().is_cpu()) {
    cpu::scale_by(grad.dtype(), grad.data(), grad.numel(), *scale.data_ptr<float>());
    return;
  }
  detail::DeviceGuard g(grad.device());
  kernels::scale_by(grad.dtype(), grad.data(), grad.numel(), scale.data_ptr<float>(), detail::stream(grad.device()));
}

}  // namespace octet
