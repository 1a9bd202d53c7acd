// clip_grad_norm_ (include/octet/optim.hpp): validation and dispatch. Gradients are grouped by
// dtype (groups in order of first appearance); each group writes its chunks' f64 sums of squares
// into one partials buffer, one finish reduces them to the norm and the clip coefficient on the
// device, and each group is scaled in place by that coefficient. Both devices use the chunks and
// order of kernels/optim.cuh, so the norm has the same bits on each.
#include <algorithm>
#include <cmath>

#include "octet/autograd.hpp"
#include "octet/optim.hpp"
#include "src/check.hpp"
#include "src/cpu/optim.hpp"
#include "src/runtime_internal.hpp"

namespace octet::optim {

Tensor clip_grad_norm_(const std::vector<Tensor>& params, double max_norm) {
  constexpr const char* op = "clip_grad_norm_";
  if (!std::isfinite(max_norm) || !(max_norm > 0)) fail_arg(op, "max_norm", "a finite norm > 0", cat(max_norm));
  std::vector<std::pair<DType, std::vector<kernels::OptimSlot>>> groups;
  std::vector<Tensor> grads;
  int64_t chunks = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    const std::string arg = cat("params[", i, "]");
    check::defined(op, arg, params[i]);
    const Tensor g = params[i].grad();
    if (!g.defined()) continue;
    check::dtype_in(op, arg + ".grad()", g, {DType::f32, DType::f16, DType::bf16});
    if (!grads.empty()) check::device_is(op, arg + ".grad()", g, grads.front().device());
    grads.push_back(g);
  }
  const Device dev =
      grads.empty() ? (params.empty() ? Device::cpu() : params.front().device()) : grads.front().device();
  check::usable(op, dev);
  NoGradGuard no_grad;
  for (const Tensor& g : grads) {
    autograd::mark_inplace(op, "params[i].grad()", g);
    kernels::OptimSlot s;
    s.grad = g.data();
    s.numel = g.numel();
    chunks += kernels::chunks_of(s.numel);
    auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& e) { return e.first == g.dtype(); });
    if (it == groups.end()) it = groups.insert(groups.end(), {g.dtype(), {}});
    it->second.push_back(s);
  }
  Tensor out = Tensor::empty({2}, DType::f32, dev);  // norm, clip coefficient
  Tensor partials = Tensor::empty({std::max<int64_t>(chunks, 1)}, DType::f64, dev);
  double* part = partials.data_ptr<double>();
  float* o = out.data_ptr<float>();
  const auto limit = static_cast<float>(max_norm);
  if (dev.is_cpu()) {
    int64_t offset = 0;
    for (const auto& [dtype, slots] : groups) {
      cpu::grad_sumsq(dtype, slots.data(), static_cast<int64_t>(slots.size()), part + offset);
      for (const auto& s : slots) offset += kernels::chunks_of(s.numel);
    }
    cpu::grad_norm_finish(part, chunks, limit, o);
    for (const auto& [dtype, slots] : groups)
      cpu::grad_scale(dtype, slots.data(), static_cast<int64_t>(slots.size()), o + 1);
  } else {
    detail::DeviceGuard guard(dev);
    const cudaStream_t s = detail::stream(dev);
    int64_t offset = 0;
    for (const auto& [dtype, slots] : groups) {
      kernels::grad_sumsq(dtype, slots.data(), static_cast<int64_t>(slots.size()), part + offset, s);
      for (const auto& slot : slots) offset += kernels::chunks_of(slot.numel);
    }
    kernels::grad_norm_finish(part, chunks, limit, o, s);
    for (const auto& [dtype, slots] : groups)
      kernels::grad_scale(dtype, slots.data(), static_cast<int64_t>(slots.size()), o + 1, s);
  }
  auto norm = std::make_shared<TensorImpl>();  // element 0 as an f32 [] sharing out's storage
  norm->storage = out.impl()->storage;
  norm->dtype = DType::f32;
  norm->offset = out.impl()->offset;
  return Tensor(std::move(norm));
}

}  // namespace octet::optim
