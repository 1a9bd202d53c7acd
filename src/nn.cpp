// nn::Linear (y = x W^T + b, weight (out, in)), the initializers and sgd_step.
// Linear's forward is the differentiable core op linear (x W^T + b), so its backward
// is that op's. Initializers and sgd_step write in place under NoGradGuard.
#include <cmath>

#include "octet/autograd.hpp"
#include "octet/nn.hpp"
#include "octet/ops.hpp"
#include "octet/random.hpp"
#include "src/check.hpp"

namespace octet::nn {
namespace {

constexpr std::initializer_list<DType> kFloat = {DType::f32, DType::f64, DType::f16, DType::bf16};

void check_size(const char* op, const char* arg, int64_t v) {
  if (v < 0) fail_arg(op, arg, "a non-negative size", cat(v));
}

// {fan_in, fan_out} of a tensor (out, in, k...).
std::pair<double, double> fans(const char* op, const Tensor& t) {
  check::dim_in(op, "t", t, 2, 8);
  double receptive = 1;
  for (int64_t d = 2; d < t.dim(); ++d) receptive *= static_cast<double>(t.size(d));
  return {static_cast<double>(t.size(1)) * receptive, static_cast<double>(t.size(0)) * receptive};
}

// U(lo, hi) into t, drawn in f32 (f64 for f64) as lo + (hi - lo) u with u in (0, 1].
void fill_uniform(Tensor& t, double lo, double hi) {
  NoGradGuard no_grad;
  const DType gen = t.dtype() == DType::f64 ? DType::f64 : DType::f32;
  Tensor u = rand(t.shape(), gen, t.device());
  t.copy_(add(scale(u, hi - lo), Tensor::full(t.shape(), lo, gen, t.device())));
}

}  // namespace

Linear::Linear(int64_t in, int64_t out, bool with_bias, Device device, DType dtype)
    : in_features(in), out_features(out) {
  check_size("Linear", "in_features", in);
  check_size("Linear", "out_features", out);
  if (!autograd::differentiable(dtype)) fail_arg("Linear", "dtype", "f32, f64, f16 or bf16", dtype_name(dtype));
  check::usable("Linear", device);
  weight = Tensor::empty({out, in}, dtype, device);
  init::kaiming_uniform_(weight, std::sqrt(5.0));
  weight.requires_grad_();
  if (with_bias) {
    const double bound = in > 0 ? 1.0 / std::sqrt(static_cast<double>(in)) : 0.0;
    bias = Tensor::empty({out}, dtype, device);
    init::uniform_(bias, -bound, bound);
    bias.requires_grad_();
  }
}

Tensor Linear::forward(const Tensor& x) {
  const char* op = "Linear::forward";
  check::dim_in(op, "x", x, 2, 3);
  check::dtype_is(op, "x", x, weight.dtype());
  check::device_is(op, "x", x, weight.device());
  if (x.size(-1) != in_features)
    fail_arg(op, "x", cat("last dimension ", in_features, " (in_features)"), cat("shape ", shape_str(x.shape())));
  return linear(x, weight, bias);
}

std::vector<Tensor> Linear::parameters() const {
  if (bias.defined()) return {weight, bias};
  return {weight};
}

namespace init {

void uniform_(Tensor& t, double lo, double hi) {
  check::dtype_in("uniform_", "t", t, kFloat);
  if (!std::isfinite(lo) || !std::isfinite(hi) || lo > hi)
    fail_arg("uniform_", "lo, hi", "finite bounds with lo <= hi", cat(lo, ", ", hi));
  fill_uniform(t, lo, hi);
}

void xavier_uniform_(Tensor& t, double gain) {
  check::dtype_in("xavier_uniform_", "t", t, kFloat);
  const auto [fan_in, fan_out] = fans("xavier_uniform_", t);
  if (!std::isfinite(gain)) fail_arg("xavier_uniform_", "gain", "a finite value", cat(gain));
  if (t.numel() == 0) return;
  const double a = std::fabs(gain) * std::sqrt(6.0 / (fan_in + fan_out));
  fill_uniform(t, -a, a);
}

void kaiming_uniform_(Tensor& t, double a) {
  check::dtype_in("kaiming_uniform_", "t", t, kFloat);
  const double fan_in = fans("kaiming_uniform_", t).first;
  if (!std::isfinite(a)) fail_arg("kaiming_uniform_", "a", "a finite value", cat(a));
  if (t.numel() == 0) return;
  const double bound = std::sqrt(6.0 / ((1.0 + a * a) * fan_in));
  fill_uniform(t, -bound, bound);
}

}  // namespace init

void sgd_step(const std::vector<Tensor>& parameters, double lr) {
  if (!std::isfinite(lr) || lr < 0) fail_arg("sgd_step", "lr", "a finite learning rate >= 0", cat(lr));
  for (size_t i = 0; i < parameters.size(); ++i) {
    const Tensor& p = parameters[i];
    const std::string name = cat("parameters[", i, "]");
    check::dtype_in("sgd_step", name, p, kFloat);
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    const std::string gname = name + ".grad()";
    check::dtype_is("sgd_step", gname, g, p.dtype());
    check::device_is("sgd_step", gname, g, p.device());
    check::shape_is("sgd_step", gname, g, p.shape());
  }
  NoGradGuard no_grad;
  for (const Tensor& p : parameters)
    if (p.grad().defined()) axpy_(p, -lr, p.grad());
}

}  // namespace octet::nn
