// Tests of octet::optim: AdamW (f32 and bf16 states) and SGD against f64 references of torch's
// formulas (with parameter groups and a learning-rate schedule), AdamW8bit's states against
// quantize_blockwise of the exactly updated f32 states, non-finite gradients, empty tensors,
// parameters without gradients, the percentile-clipping path against percentile_clipping +
// scale_by_ + the unclipped update, clip_grad_norm_, state_bytes, resuming from a saved state bit
// for bit, training a small MLP with AdamW8bit against AdamW, and (CUDA) the same bits as the CPU
// and a captured, replayed CUDA graph equal to eager steps. Bad inputs: tests/test_optim_errors.cpp.
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>

#include "kernels/optim_math.cuh"
#include "src/cpu/quant.hpp"
#include "tests/helpers.hpp"
#include "tests/optim_helpers.hpp"

using namespace octet;
using namespace octet::test;

namespace {

// torch.optim.AdamW in f64 (optionally rounding the states to bf16 after each step, as a bf16
// state tensor does).
struct AdamRef {
  std::vector<double> p, m, v;
  int64_t t = 0;
  void step(const std::vector<double>& g, double lr, double wd, double b1, double b2, double eps, bool bf16) {
    ++t;
    for (size_t i = 0; i < p.size(); ++i) {
      p[i] *= 1 - lr * wd;
      m[i] = b1 * m[i] + (1 - b1) * g[i];
      v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
      if (bf16) {
        m[i] = bf16_bits_to_float(float_to_bf16_bits(static_cast<float>(m[i])));
        v[i] = bf16_bits_to_float(float_to_bf16_bits(static_cast<float>(v[i])));
      }
      const double mh = m[i] / (1 - std::pow(b1, double(t))), vh = v[i] / (1 - std::pow(b2, double(t)));
      p[i] -= lr * mh / (std::sqrt(vh) + eps);
    }
  }
};

void adamw_against_reference(Device dev, DType state_dtype) {
  manual_seed(11);
  const Tensor w0 = randn({37, 29}), b0 = randn({301});
  Tensor w = w0.to(dev).requires_grad_(), b = b0.to(dev).requires_grad_();
  optim::AdamWOptions o;
  o.lr = 1e-2;
  o.weight_decay = 0.1;
  o.beta2 = 0.99;
  o.state_dtype = state_dtype;
  optim::AdamW opt({{{w}, {}, {}}, {{b}, 3e-3, 0.0}}, o);
  const bool bf16 = state_dtype == DType::bf16;
  AdamRef rw{values(w0), std::vector<double>(w0.numel()), std::vector<double>(w0.numel())};
  AdamRef rb{values(b0), std::vector<double>(b0.numel()), std::vector<double>(b0.numel())};
  for (int step = 0; step < 6; ++step) {
    if (step == 3) opt.set_lr(0, 5e-3);  // a schedule: lr changes between steps
    if (step == 4) {                     // and any other hyperparameter
      optim::Hyperparameters h = opt.hyperparameters(1);
      h.beta1 = 0.8;
      h.eps = 1e-6;
      opt.set_hyperparameters(1, h);
    }
    const Tensor gw = randn(w.shape()), gb = scale(randn(b.shape()), 0.1);
    w.set_grad(gw.to(dev));
    b.set_grad(gb.clone().to(dev));
    opt.step();
    rw.step(values(gw), step >= 3 ? 5e-3 : 1e-2, 0.1, 0.9, 0.99, 1e-8, bf16);
    rb.step(values(gb), 3e-3, 0.0, step >= 4 ? 0.8 : 0.9, 0.99, step >= 4 ? 1e-6 : 1e-8, bf16);
  }
  // f32 arithmetic against f64: a few ulps of the step per step (bf16 states: the references round
  // the same states, but an f32 m that lands next to a bf16 midpoint may round the other way)
  const double tol = bf16 ? 2e-4 : 2e-6;
  CHECK(max_abs_diff(w.detach(), Tensor::from_vector(rw.p, w0.shape()).to(DType::f32)) < tol);
  CHECK(max_abs_diff(b.detach(), Tensor::from_vector(rb.p, b0.shape()).to(DType::f32)) < tol);
  CHECK(opt.steps(0) == 6);
  const optim::StateDict s = opt.state_dict();
  CHECK(s.tensors.at("param.0.exp_avg").dtype() == state_dtype);
  CHECK(max_abs_diff(s.tensors.at("param.1.exp_avg_sq").to(DType::f32), Tensor::from_vector(rb.v).to(DType::f32)) <
        (bf16 ? 1e-4 : 1e-8));
}

void adamw_f32_states(Device d) { adamw_against_reference(d, DType::f32); }
void adamw_bf16_states(Device d) { adamw_against_reference(d, DType::bf16); }
OCTET_TEST_BOTH("optim: AdamW (f32 states) matches torch's formula in f64, with groups and an lr schedule",
                adamw_f32_states)
OCTET_TEST_BOTH("optim: AdamW (bf16 states) matches torch's formula in f64 with bf16-rounded states", adamw_bf16_states)

// AdamW8bit: each step's codes and absmax equal quantize_blockwise of the f32 states updated
// exactly from the dequantized previous states; the parameter gets the update's bits.
void adamw8bit_composition(Device dev, DType param_dtype) {
  manual_seed(13);
  const int64_t n = 5000;  // 19 full blocks of 256 and a partial one
  Tensor p = randn({50, n / 50}).to(param_dtype, dev).requires_grad_();
  optim::AdamW8bitOptions o;
  o.lr = 1e-2;
  o.weight_decay = 0.05;
  optim::AdamW8bit opt({p}, o);
  const Code code_m = Code::dynamic(true), code_v = Code::dynamic(false);
  std::vector<float> m(n), v(n);
  for (int step = 1; step <= 4; ++step) {
    const Tensor g = randn(p.shape()).to(param_dtype);
    p.set_grad(g.to(dev));
    const std::vector<float> p_before = p.detach().to_vector<float>(), gv = g.to_vector<float>();
    opt.step();
    const double hyper[optim_math::kHyperCount] = {1e-2, 0.05, 0.9, 0.999, 1e-8, 0, 0, 0};
    const optim_math::StepScalars sc = optim_math::step_scalars_8bit(hyper, step);
    std::vector<float> p_expected(n);
    for (int64_t i = 0; i < n; ++i) {
      const optim_math::Adam r = optim_math::adamw8bit_update(p_before[i], gv[i], m[i], v[i], 1.0f, sc);
      p_expected[i] = r.p;
      m[i] = r.m;
      v[i] = r.v;
    }
    const Quantized qm = quantize_blockwise(Tensor::from_vector(m, p.shape()), code_m, 256);
    const Quantized qv = quantize_blockwise(Tensor::from_vector(v, p.shape()), code_v, 256);
    const optim::StateDict s = opt.state_dict();
    CAPTURE(step);
    CHECK(bitwise_equal(s.tensors.at("param.0.exp_avg.codes"), qm.codes));
    CHECK(bitwise_equal(s.tensors.at("param.0.exp_avg.absmax"), qm.state.absmax));
    CHECK(bitwise_equal(s.tensors.at("param.0.exp_avg_sq.codes"), qv.codes));
    CHECK(bitwise_equal(s.tensors.at("param.0.exp_avg_sq.absmax"), qv.state.absmax));
    CHECK(bitwise_equal(p.detach().to(Device::cpu()), Tensor::from_vector(p_expected, p.shape()).to(param_dtype)));
    // the next step starts from the dequantized states
    m = dequantize_blockwise(qm.codes, qm.state).to_vector<float>();
    v = dequantize_blockwise(qv.codes, qv.state).to_vector<float>();
  }
}

void adamw8bit_f32_params(Device d) { adamw8bit_composition(d, DType::f32); }
void adamw8bit_bf16_params(Device d) { adamw8bit_composition(d, DType::bf16); }
void adamw8bit_f16_params(Device d) { adamw8bit_composition(d, DType::f16); }
OCTET_TEST_BOTH("optim: AdamW8bit states equal quantize_blockwise of the exactly updated f32 states (f32 params)",
                adamw8bit_f32_params)
OCTET_TEST_BOTH("optim: AdamW8bit states equal quantize_blockwise of the exactly updated f32 states (bf16 params)",
                adamw8bit_bf16_params)
OCTET_TEST_BOTH("optim: AdamW8bit states equal quantize_blockwise of the exactly updated f32 states (f16 params)",
                adamw8bit_f16_params)

// bitsandbytes' update in f64 on the f32-state path (tensors below min_8bit_size).
void adamw8bit_small(Device dev) {
  manual_seed(14);
  const Tensor p0 = randn({4095});
  Tensor p = p0.to(dev).requires_grad_();
  optim::AdamW8bit opt({p}, {2e-3, 0.8, 0.95, 1e-6, 0.1, 100, 4096});
  std::vector<double> ref = values(p0), m(ref.size()), v(ref.size());
  for (int t = 1; t <= 5; ++t) {
    const Tensor g = randn(p.shape());
    p.set_grad(g.to(dev));
    opt.step();
    const std::vector<double> gv = values(g);
    const double c1 = 1 - std::pow(0.8, t), c2 = std::sqrt(1 - std::pow(0.95, t));
    for (size_t i = 0; i < ref.size(); ++i) {
      v[i] = 0.95 * v[i] + 0.05 * gv[i] * gv[i];
      m[i] = 0.8 * m[i] + 0.2 * gv[i];
      ref[i] += -2e-3 * c2 / c1 * m[i] / (std::sqrt(v[i]) + c2 * 1e-6);
      ref[i] *= 1 - 2e-3 * 0.1;
    }
  }
  CHECK(max_abs_diff(p.detach(), Tensor::from_vector(ref).to(DType::f32)) < 2e-6);
  const optim::StateDict s = opt.state_dict();
  CHECK(s.tensors.at("param.0.exp_avg").dtype() == DType::f32);
  CHECK(s.tensors.count("param.0.exp_avg.codes") == 0);
}
OCTET_TEST_BOTH("optim: AdamW8bit below min_8bit_size keeps f32 states and follows bitsandbytes' update",
                adamw8bit_small)

void sgd_against_reference(Device dev, double momentum, double dampening, bool nesterov, double wd) {
  manual_seed(12);
  const Tensor p0 = randn({1000});
  Tensor p = p0.to(dev).requires_grad_();
  optim::SGD opt({p}, {0.05, momentum, dampening, wd, nesterov});
  std::vector<double> ref = values(p0), buf(ref.size());
  for (int step = 0; step < 5; ++step) {
    const Tensor g = randn(p.shape());
    p.set_grad(g.to(dev));
    opt.step();
    const std::vector<double> gv = values(g);
    for (size_t i = 0; i < ref.size(); ++i) {
      double d = gv[i] + wd * ref[i];
      if (momentum != 0) {
        buf[i] = step == 0 ? d : momentum * buf[i] + (1 - dampening) * d;
        d = nesterov ? d + momentum * buf[i] : buf[i];
      }
      ref[i] -= 0.05 * d;
    }
  }
  CHECK(max_abs_diff(p.detach(), Tensor::from_vector(ref).to(DType::f32)) < 2e-6);
}

void sgd_variants(Device d) {
  sgd_against_reference(d, 0, 0, false, 0);
  sgd_against_reference(d, 0.9, 0.1, false, 1e-2);
  sgd_against_reference(d, 0.9, 0, true, 1e-2);
}
OCTET_TEST_BOTH("optim: SGD matches torch's formula in f64 (plain, momentum + dampening, nesterov, weight decay)",
                sgd_variants)

void nonfinite_gradients(Device dev) {
  for (int64_t n : {int64_t{5000}, int64_t{100}}) {  // blockwise and f32 states
    CAPTURE(n);
    manual_seed(15);
    const Tensor p0 = randn({n});
    Tensor p = p0.to(dev).requires_grad_();
    optim::AdamW8bit opt({p});
    p.set_grad(randn({n}).to(dev));
    opt.step();  // states become non-zero everywhere
    const std::vector<float> before = p.detach().to_vector<float>();
    std::vector<float> g = randn({n}).to_vector<float>();
    g[3] = NAN;
    g[10] = INFINITY;
    g[n - 1] = -INFINITY;
    p.set_grad(Tensor::from_vector(g, dev));
    opt.step();
    const std::vector<float> after = p.detach().to_vector<float>();
    const optim::StateDict s = opt.state_dict();
    std::vector<float> m, v;
    if (n >= 4096) {
      QuantState qs;
      qs.absmax = s.tensors.at("param.0.exp_avg.absmax");
      qs.code = Code::dynamic(true).table(Device::cpu());
      qs.blocksize = 256;
      qs.shape = {n};
      m = dequantize_blockwise(s.tensors.at("param.0.exp_avg.codes"), qs).to_vector<float>();
      qs.absmax = s.tensors.at("param.0.exp_avg_sq.absmax");
      qs.code = Code::dynamic(false).table(Device::cpu());
      v = dequantize_blockwise(s.tensors.at("param.0.exp_avg_sq.codes"), qs).to_vector<float>();
    } else {
      m = s.tensors.at("param.0.exp_avg").to_vector<float>();
      v = s.tensors.at("param.0.exp_avg_sq").to_vector<float>();
    }
    for (int64_t i : {int64_t{3}, int64_t{10}, n - 1}) {
      CAPTURE(i);
      CHECK(std::memcmp(&after[i], &before[i], sizeof(float)) == 0);
      CHECK(m[i] == 0.0f);
      CHECK(v[i] == 0.0f);
    }
    CHECK(after[4] != before[4]);  // its neighbours moved
    for (float x : after) CHECK(std::isfinite(x));
  }
}
OCTET_TEST_BOTH("optim: AdamW8bit leaves a parameter with a non-finite gradient as it is and zeroes its states",
                nonfinite_gradients)

void empty_and_gradless(Device dev) {
  for (int algo = 0; algo < 3; ++algo) {
    CAPTURE(algo);
    Tensor empty = Tensor::zeros({3, 0}, DType::f32, dev).requires_grad_();
    Tensor used = Tensor::ones({5000}, DType::f32, dev).requires_grad_();
    Tensor unused = Tensor::ones({7}, DType::f32, dev).requires_grad_();
    std::unique_ptr<optim::Optimizer> opt = make_optimizer(algo, {empty, used, unused}, 100);
    empty.set_grad(Tensor::zeros({3, 0}, DType::f32, dev));
    used.set_grad(Tensor::full({5000}, 0.5, DType::f32, dev));
    opt->step();
    opt->step();
    CHECK(opt->steps(0) == 2);
    CHECK(opt->steps(1) == 2);
    CHECK(opt->steps(2) == 0);  // skipped: no gradient
    CHECK(bitwise_equal(unused.detach().to(Device::cpu()), Tensor::ones({7})));
    CHECK(used.detach().to_vector<float>()[0] < 1.0f);
    opt->zero_grad();
    CHECK(!used.grad().defined());
    opt->step();  // nothing has a gradient: nothing happens
    CHECK(opt->steps(1) == 2);
  }
}
OCTET_TEST_BOTH("optim: empty parameters and parameters without a gradient", empty_and_gradless)

// The clipping inside the update equals percentile_clipping + scale_by_ on a copy of the gradient
// followed by the same optimizer without clipping, bit for bit.
void percentile_path(Device dev) {
  for (int algo = 0; algo < 3; ++algo) {
    CAPTURE(algo);
    manual_seed(16);
    const Tensor w0 = randn({4100}), b0 = randn({33});
    Tensor wa = w0.to(dev).requires_grad_(), ba = b0.to(dev).requires_grad_();
    Tensor wb = w0.to(dev).requires_grad_(), bb = b0.to(dev).requires_grad_();
    auto clipped = make_optimizer(algo, {wa, ba}, 5);
    auto plain = make_optimizer(algo, {wb, bb}, 100);
    ClipState cw = ClipState::create(dev), cb = ClipState::create(dev);
    for (int step = 0; step < 12; ++step) {
      const double size = step % 4 == 3 ? 30.0 : 1.0;  // spikes that the history clips
      const Tensor gw = scale(randn(w0.shape()), size).to(dev), gb = scale(randn(b0.shape()), size).to(dev);
      wa.set_grad(gw.clone());
      ba.set_grad(gb.clone());
      wb.set_grad(gw.clone());
      bb.set_grad(gb.clone());
      scale_by_(wb.grad(), percentile_clipping(wb.grad(), cw, 5).scale);
      scale_by_(bb.grad(), percentile_clipping(bb.grad(), cb, 5).scale);
      clipped->step();
      plain->step();
    }
    CHECK(f32_value(cw.result.scale) < 1.0f);  // the last spike was clipped
    CHECK(bitwise_equal(wa.detach().to(Device::cpu()), wb.detach().to(Device::cpu())));
    CHECK(bitwise_equal(ba.detach().to(Device::cpu()), bb.detach().to(Device::cpu())));
  }
}
OCTET_TEST_BOTH("optim: percentile clipping equals percentile_clipping and scale_by_ before the update",
                percentile_path)

void clip_grad_norm_case(Device dev) {
  manual_seed(17);
  Tensor a = Tensor::zeros({3000}, DType::f32, dev).requires_grad_();
  Tensor b = Tensor::zeros({17, 5}, DType::bf16, dev).requires_grad_();
  Tensor c = Tensor::zeros({4}, DType::f32, dev).requires_grad_();  // no gradient
  const Tensor ga = randn({3000}), gb = randn({17, 5}).to(DType::bf16);
  a.set_grad(ga.clone().to(dev));
  b.set_grad(gb.clone().to(dev));
  double sumsq = 0;
  for (double x : values(ga)) sumsq += x * x;
  for (double x : values(gb)) sumsq += x * x;
  const Tensor norm = optim::clip_grad_norm_({a, b, c}, 1.0);
  CHECK(norm.shape().empty());
  CHECK(norm.device() == dev);
  CHECK(std::fabs(f32_value(norm) - std::sqrt(sumsq)) <= 1e-6 * std::sqrt(sumsq));
  const double coef = 1.0 / (std::sqrt(sumsq) + 1e-6);
  CHECK(max_abs_diff(a.grad(), scale(ga, coef).to(dev)) < 1e-7);
  CHECK(max_abs_diff(b.grad().to(DType::f32), scale(gb.to(DType::f32), coef).to(dev)) < 1e-2 * coef * 4);
  // below max_norm: the gradients keep their bits
  const Tensor before = a.grad().clone();
  const Tensor norm2 = optim::clip_grad_norm_({a, b}, 1e6);
  CHECK(std::fabs(f32_value(norm2) - 1.0f) < 1e-5f);
  CHECK(bitwise_equal(a.grad().to(Device::cpu()), before.to(Device::cpu())));
  CHECK(f32_value(optim::clip_grad_norm_({c}, 1.0)) == 0.0f);  // no gradients: norm 0
}
OCTET_TEST_BOTH("optim: clip_grad_norm_ matches the f64 norm and scales gradients", clip_grad_norm_case)

// The CUDA 8-bit kernel finds indices with the codes' compact tables, clamped to their domain
// (kernels/optim.cu index_of); on the host that lookup must equal closed_form, the CPU's rule, on
// every x the kernel can see: [-(1 + 2^-23), 1 + 2^-23] (both ends, every code's midpoint and
// value and their float neighbours, random values) and NaN.
TEST_CASE("optim: the kernels' compact index lookup equals closed_form for both state tables") {
  for (bool is_signed : {true, false}) {
    CAPTURE(is_signed);
    const Code code = Code::dynamic(is_signed);
    const quant_index::Tables t = cpu::index_tables(code.values().data());
    const cpu::IndexLut& lut = quant_internal::index_lut(code);
    REQUIRE(lut.compact.entries > 0);
    const quant_index::Compact& c = lut.compact;
    std::vector<float> xs = {quant_index::kMaxKernelX, -quant_index::kMaxKernelX, 0.0f, -0.0f, NAN, 1.0f, -1.0f};
    for (int j = 0; j < 256; ++j)
      for (float base : {t.code[j], j < 255 ? t.mid[j] : t.code[j]}) {
        float x = base;
        for (int d = 0; d < 3; ++d) x = std::nextafter(x, -2.0f);
        for (int d = 0; d < 7; ++d, x = std::nextafter(x, 2.0f)) xs.push_back(x);
      }
    const std::vector<float> r = rand({200000}).to_vector<float>();
    for (float u : r) xs.push_back(is_signed ? 2 * u - 1 : u);
    int64_t bad = 0, checked = 0;
    for (float x : xs) {
      if (std::fabs(x) > quant_index::kMaxKernelX) continue;
      const uint32_t lookup =
          quant_index::compact_index(lut.compact_entries.data(), c, std::fmin(std::fmax(x, c.floor), c.hi)) & 0xFFu;
      bad += lookup != static_cast<uint32_t>(quant_index::closed_form(t.code, t.mid, x));
      ++checked;
    }
    CHECK(checked > 200000);
    CHECK(bad == 0);
  }
}

TEST_CASE("optim: state_bytes counts states, absmax, step counters, histories and hyperparameters") {
  Tensor big = Tensor::zeros({5000}).requires_grad_(), small = Tensor::zeros({100}).requires_grad_();
  const size_t per_param = 64, hyper = 64;
  optim::AdamW8bit eight({big, small});
  // the code tables and midpoints (4 KiB), then both compact index tables
  const size_t tables = 4096 + 4 * (quant_internal::index_lut(Code::dynamic(true)).compact_entries.size() +
                                    quant_internal::index_lut(Code::dynamic(false)).compact_entries.size());
  CHECK(eight.state_bytes() == tables + hyper + 2 * per_param + 2 * 5000 + 2 * 20 * 4 + 2 * 100 * 4);
  optim::AdamW adamw({big, small});
  CHECK(adamw.state_bytes() == hyper + 2 * per_param + 8 * 5100);
  optim::AdamW bf16({big}, {1e-3, 0.9, 0.999, 1e-8, 0.01, 100, DType::bf16});
  CHECK(bf16.state_bytes() == hyper + per_param + 4 * 5000);
  optim::SGD sgd({big}, {0.1});
  CHECK(sgd.state_bytes() == hyper + per_param);
  optim::SGD momentum({big}, {0.1, 0.9});
  CHECK(momentum.state_bytes() == hyper + per_param + 4 * 5000);
  optim::Hyperparameters h = sgd.hyperparameters(0);
  h.momentum = 0.5;  // turning momentum on later creates the buffers then (never in step())
  sgd.set_hyperparameters(0, h);
  CHECK(sgd.state_bytes() == hyper + per_param + 4 * 5000);
  optim::AdamW clipped({big}, {1e-3, 0.9, 0.999, 1e-8, 0.01, 5});
  CHECK(clipped.state_bytes() == hyper + per_param + 8 * 5000 + 400 + 8 + 12);
}

}  // namespace
