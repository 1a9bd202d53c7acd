// Gradient checks for tests (gradcheck.hpp). Everything numeric runs in f64 on the host.
#include "tests/gradcheck.hpp"

#include <cmath>
#include <sstream>

namespace octet::test {
namespace {

std::vector<double> host_values(const Tensor& t) { return t.to_vector<double>(); }

// Fresh leaves holding the values of inputs, with the same requires_grad flags.
std::vector<Tensor> leaves_like(const std::vector<Tensor>& inputs) {
  std::vector<Tensor> out;
  NoGradGuard no_grad;
  for (const Tensor& t : inputs) {
    Tensor c = t.detach().clone();
    if (t.requires_grad()) c.requires_grad_();
    out.push_back(c);
  }
  return out;
}

// f at inputs with input j replaced by values v (no recording), as f64 values.
std::vector<double> eval_at(const GradFn& f, const std::vector<Tensor>& inputs, size_t j, const std::vector<double>& v) {
  NoGradGuard no_grad;
  std::vector<Tensor> in = inputs;
  in[j] = Tensor::from_vector(v, inputs[j].shape()).to(inputs[j].dtype());
  return host_values(f(in));
}

struct Comparer {
  const GradcheckOptions& opt;
  GradcheckResult result;
  int reported = 0;
  void operator()(double analytic, double numeric, const std::string& where) {
    const double err = std::fabs(analytic - numeric) - opt.rtol * std::fabs(numeric);
    if (!(err <= opt.atol)) {
      result.ok = false;
      if (reported++ < 8) {
        std::ostringstream s;
        s.precision(12);
        s << where << ": analytic " << analytic << ", numeric " << numeric << "\n";
        result.report += s.str();
      }
    }
    if (err > result.max_error || std::isnan(err)) result.max_error = std::isnan(err) ? INFINITY : err;
  }
};

}  // namespace

double unit_roundoff(DType t) {
  switch (t) {
    case DType::f64: return std::ldexp(1.0, -53);
    case DType::f32: return std::ldexp(1.0, -24);
    case DType::f16: return std::ldexp(1.0, -11);
    case DType::bf16: return std::ldexp(1.0, -8);
    default: throw Error("unit_roundoff: not a float dtype");
  }
}

std::vector<Tensor> grads_of(const GradFn& f, const std::vector<Tensor>& inputs, const Tensor& seed) {
  std::vector<Tensor> leaves = leaves_like(inputs);
  Tensor y = f(leaves);
  backward(y, seed);
  std::vector<Tensor> out{y.detach()};
  for (const Tensor& l : leaves) out.push_back(l.grad());
  return out;
}

std::vector<Tensor> converted(const std::vector<Tensor>& inputs, DType t, Device d) {
  std::vector<Tensor> out;
  NoGradGuard no_grad;
  for (const Tensor& x : inputs) {
    Tensor c = autograd::differentiable(x.dtype()) ? x.detach().to(t, d) : x.detach().to(d);
    if (c.same(x) || c.impl()->storage == x.impl()->storage) c = c.clone();
    if (x.requires_grad()) c.requires_grad_();
    out.push_back(c);
  }
  return out;
}

double rel_error_all(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  if (a.size() != b.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].defined() != b[i].defined()) return INFINITY;
    if (!a[i].defined()) continue;
    if (a[i].shape() != b[i].shape()) return INFINITY;
    const auto x = host_values(a[i]), y = host_values(b[i]);
    for (size_t k = 0; k < x.size(); ++k) {
      num += (x[k] - y[k]) * (x[k] - y[k]);
      den += y[k] * y[k];
    }
  }
  if (std::isnan(num)) return INFINITY;
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

GradcheckResult gradcheck(const GradFn& f, const std::vector<Tensor>& inputs, const GradcheckOptions& opt) {
  for (const Tensor& x : inputs)
    if (x.dtype() != DType::f64 || !x.device().is_cpu())
      throw Error("gradcheck: inputs must be f64 tensors on the CPU, got " + x.str());
  Comparer cmp{opt, {}};
  std::vector<Tensor> base = leaves_like(inputs);
  Tensor y0;
  {
    std::vector<Tensor> l = leaves_like(inputs);
    y0 = f(l);
    if (!y0.requires_grad()) return {false, INFINITY, "the output does not require grad"};
  }
  const int64_t n_out = y0.numel();
  int64_t n_in = 0;
  for (const Tensor& x : inputs)
    if (x.requires_grad()) n_in += x.numel();

  if (n_out * n_in <= opt.max_full) {
    // analytic Jacobian rows: one backward per output element
    std::vector<std::vector<std::vector<double>>> rows(static_cast<size_t>(n_out));  // [out][input][elem]
    for (int64_t o = 0; o < n_out; ++o) {
      std::vector<double> onehot(static_cast<size_t>(n_out), 0.0);
      onehot[static_cast<size_t>(o)] = 1.0;
      Tensor seed = Tensor::from_vector(onehot, y0.shape()).to(y0.dtype());
      std::vector<Tensor> g = grads_of(f, inputs, seed);
      for (size_t j = 0; j < inputs.size(); ++j)
        rows[static_cast<size_t>(o)].push_back(g[j + 1].defined() ? host_values(g[j + 1])
                                                                  : std::vector<double>(static_cast<size_t>(inputs[j].numel()), 0.0));
    }
    // numeric Jacobian columns: central differences per input element
    for (size_t j = 0; j < inputs.size(); ++j) {
      if (!inputs[j].requires_grad()) continue;
      const std::vector<double> x = host_values(inputs[j]);
      for (size_t e = 0; e < x.size(); ++e) {
        std::vector<double> xp = x, xm = x;
        xp[e] += opt.eps;
        xm[e] -= opt.eps;
        const auto fp = eval_at(f, base, j, xp), fm = eval_at(f, base, j, xm);
        for (int64_t o = 0; o < n_out; ++o) {
          const double num = (fp[static_cast<size_t>(o)] - fm[static_cast<size_t>(o)]) / (2 * opt.eps);
          cmp(rows[static_cast<size_t>(o)][j][e], num,
              "d out[" + std::to_string(o) + "] / d input " + std::to_string(j) + "[" + std::to_string(e) + "]");
        }
      }
    }
    return cmp.result;
  }
  // random projections: v^T J u, analytic through backward(y, v), numeric along u
  for (int p = 0; p < opt.probes; ++p) {
    Tensor v = randn(y0.shape(), DType::f64).to(y0.dtype());
    const std::vector<double> vv = host_values(v);
    std::vector<Tensor> g = grads_of(f, inputs, v);
    double analytic = 0;
    std::vector<Tensor> plus = base, minus = base;
    {
      NoGradGuard no_grad;
      for (size_t j = 0; j < inputs.size(); ++j) {
        if (!inputs[j].requires_grad()) continue;
        Tensor u = randn(inputs[j].shape(), DType::f64);
        if (g[j + 1].defined()) {
          const auto gu = host_values(g[j + 1]), uu = host_values(u);
          for (size_t k = 0; k < gu.size(); ++k) analytic += gu[k] * uu[k];
        }
        plus[j] = add(base[j].detach(), scale(u, opt.eps));
        minus[j] = sub(base[j].detach(), scale(u, opt.eps));
      }
    }
    std::vector<double> fp, fm;
    {
      NoGradGuard no_grad;
      fp = host_values(f(plus));
      fm = host_values(f(minus));
    }
    double numeric = 0;
    for (size_t k = 0; k < vv.size(); ++k) numeric += vv[k] * (fp[k] - fm[k]) / (2 * opt.eps);
    cmp(analytic, numeric, "probe " + std::to_string(p));
  }
  return cmp.result;
}

}  // namespace octet::test
