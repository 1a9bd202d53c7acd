// Autograd: the engine (accumulation, graph shapes, freeing, errors, in-place safety) and every
// differentiable op: a central-difference gradcheck in f64 on the CPU, the same op in f32, f16
// and bf16 on both devices against its f64 gradients, and CPU against CUDA in f32.
#include <cmath>
#include <memory>
#include <thread>

#include "tests/gradcheck.hpp"
#include "tests/helpers.hpp"

using namespace octet;

namespace {

Tensor leaf(const std::vector<double>& v, const Shape& s) { return Tensor::from_vector(v, s).requires_grad_(); }

std::vector<double> grad_values(const Tensor& t) { return test::values(t.grad()); }

}  // namespace

// ---- engine ----------------------------------------------------------------------------------

TEST_CASE("backward accumulates into leaves and frees the graph") {
  Tensor x = leaf({1.0, -2.0, 3.0}, {3});
  Tensor y = sum(mul(x, x));
  backward(y);
  CHECK(grad_values(x) == std::vector<double>{2.0, -4.0, 6.0});
  CHECK_THROWS_WITH_AS(backward(y), doctest::Contains("already freed"), Error);
  // a new graph on top of a freed one cannot run either
  CHECK_THROWS_WITH_AS(backward(scale(y, 2.0)), doctest::Contains("'sum' was already freed"), Error);
  Tensor z = sum(x);
  backward(z);
  CHECK(grad_values(x) == std::vector<double>{3.0, -3.0, 7.0});  // accumulated
  Tensor kept = x.grad();
  backward(sum(scale(x, 2.0)));
  CHECK(test::values(kept) == std::vector<double>{3.0, -3.0, 7.0});  // earlier grad tensors are not written
  CHECK(grad_values(x) == std::vector<double>{5.0, -1.0, 9.0});
  x.zero_grad();
  CHECK_FALSE(x.grad().defined());
}

TEST_CASE("backward errors: seeds, roots, dtypes") {
  Tensor x = Tensor::from_vector(std::vector<float>{1.0f, 2.0f}).requires_grad_();
  Tensor y = mul(x, x);
  CHECK_THROWS_WITH_AS(backward(y), doctest::Contains("non-scalar root"), Error);
  CHECK_THROWS_WITH_AS(backward(y, Tensor::ones({3})), doctest::Contains("backward: argument 'grad': expected shape (2,)"), Error);
  CHECK_THROWS_WITH_AS(backward(y, Tensor::ones({2, 1})), doctest::Contains("expected shape (2,), got shape (2, 1)"), Error);
  CHECK_THROWS_WITH_AS(backward(y, Tensor::ones({2}, DType::f64)), doctest::Contains("expected dtype f32, got dtype f64"), Error);
  CHECK_THROWS_WITH_AS(backward(Tensor::ones({1})), doctest::Contains("does not require grad"), Error);
  CHECK_THROWS_WITH_AS(backward(Tensor()), doctest::Contains("backward: argument 'root'"), Error);
  CHECK_THROWS_WITH_AS(max_abs(x), doctest::Contains("max_abs: has no gradient"), Error);
  for (DType t : {DType::i32, DType::u8, DType::i64, DType::f8_e4m3, DType::f8_e5m2})
    CHECK_THROWS_WITH_AS(Tensor::zeros({2}, t).requires_grad_(), doctest::Contains("floating-point tensor (f32, f64, f16 or bf16)"), Error);
  // conversions to non-differentiable dtypes are not recorded
  CHECK_FALSE(x.to(DType::f8_e4m3).requires_grad());
  CHECK_FALSE(x.to(DType::i32).requires_grad());
  // the seed is used as given (a non-scalar root); a one-element root of any shape needs none
  backward(y, Tensor::from_vector(std::vector<float>{3.0f, -1.0f}));
  CHECK(x.grad().to_vector<float>() == std::vector<float>{6.0f, -4.0f});
  Tensor r = leaf({2.0}, {1, 1, 1});
  backward(mul(r, r));
  CHECK(grad_values(r) == std::vector<double>{4.0});
}

OCTET_CUDA_TEST("backward: seed on another device") {
  Tensor x = Tensor::from_vector(std::vector<float>{1.0f, 2.0f}, Device::cuda(0)).requires_grad_();
  Tensor y = mul(x, x);
  CHECK_THROWS_WITH_AS(backward(y, Tensor::ones({2})), doctest::Contains("expected a tensor on cuda:0, got a tensor on cpu"), Error);
  backward(y, Tensor::ones({2}, DType::f32, Device::cuda(0)));
  CHECK(x.grad().device() == Device::cuda(0));
  CHECK(x.grad().to_vector<float>() == std::vector<float>{2.0f, 4.0f});
}

TEST_CASE("NoGradGuard nests, is per thread, and detach cuts the graph") {
  Tensor x = leaf({1.0, 2.0}, {2});
  {
    NoGradGuard a;
    {
      NoGradGuard b;
      CHECK_FALSE(grad_enabled());
    }
    CHECK_FALSE(grad_enabled());
    CHECK_FALSE(mul(x, x).requires_grad());
    CHECK(max_abs(x).item() == 2.0);
    bool other_thread = false;
    std::thread([&] { other_thread = grad_enabled() && mul(x, x).requires_grad(); }).join();
    CHECK(other_thread);
  }
  CHECK(grad_enabled());
  Tensor y = mul(x, x);
  CHECK(y.requires_grad());
  CHECK_FALSE(y.is_leaf());
  CHECK_THROWS_WITH_AS(y.requires_grad_(false), doctest::Contains("expected a leaf (use detach()"), Error);
  Tensor d = y.detach();
  CHECK_FALSE(d.requires_grad());
  CHECK(d.is_leaf());
  CHECK(test::values(d) == test::values(y));
  // the detached branch contributes nothing
  backward(sum(add(y, mul(d, x))));  // d(x^2 + d*x)/dx = 2x + d
  CHECK(grad_values(x) == std::vector<double>{3.0, 8.0});
}

TEST_CASE("diamonds, unused branches and leaves shared by several ops") {
  manual_seed(11);
  const std::vector<double> xv = test::values(randn({5}, DType::f64));
  Tensor x = leaf(xv, {5}), w = leaf({0.5, -1.0, 2.0, 0.25, 3.0}, {5});
  // diamond: y feeds two paths that meet again
  Tensor y = scale(x, 3.0);
  Tensor z = add(mul(y, y), y);  // 9x^2 + 3x
  Tensor unused = mul(x, w);     // recorded, never reaches the root
  backward(sum(z));
  auto gx = grad_values(x);
  for (size_t i = 0; i < xv.size(); ++i) CHECK(gx[i] == doctest::Approx(18 * xv[i] + 3).epsilon(1e-14));
  CHECK_FALSE(w.grad().defined());
  // the unused branch still has its graph (backward only frees what it ran)
  backward(sum(unused));
  CHECK(grad_values(w) == xv);
  // x used by several ops and inside the same op twice
  x.zero_grad();
  Tensor loss = add(add(sum(x), mean(mul(x, x))), sum(scale(x, -2.0)));
  backward(loss);
  gx = grad_values(x);
  for (size_t i = 0; i < xv.size(); ++i) CHECK(gx[i] == doctest::Approx(1 + 2 * xv[i] / 5 - 2).epsilon(1e-14));
  // an input that needs no grad gets none, even next to one that does
  Tensor c = Tensor::from_vector(xv, {5});
  backward(sum(mul(x, c)));
  CHECK_FALSE(c.grad().defined());
  // a leaf root
  Tensor r = leaf({4.0}, {});
  backward(r);
  CHECK(grad_values(r) == std::vector<double>{1.0});
}

TEST_CASE("3-D x 2-D matmul reduces the 2-D operand's gradient over the batch") {
  manual_seed(12);
  const int64_t B = 3, M = 4, K = 5, N = 2;
  const auto av = test::values(randn({B, M, K}, DType::f64)), bv = test::values(randn({K, N}, DType::f64));
  const auto sv = test::values(randn({B, M, N}, DType::f64));
  Tensor a = leaf(av, {B, M, K}), b = leaf(bv, {K, N});
  backward(matmul(a, b), Tensor::from_vector(sv, {B, M, N}));
  const auto ga = grad_values(a), gb = grad_values(b);
  REQUIRE(a.grad().shape() == Shape{B, M, K});
  REQUIRE(b.grad().shape() == Shape{K, N});
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n = 0; n < N; ++n) {
      double ref = 0;  // sum over batch and rows of a[b,m,k] * seed[b,m,n]
      for (int64_t bm = 0; bm < B * M; ++bm) ref += av[bm * K + k] * sv[bm * N + n];
      CHECK(gb[k * N + n] == doctest::Approx(ref).epsilon(1e-13));
    }
  for (int64_t bm = 0; bm < B * M; ++bm)
    for (int64_t k = 0; k < K; ++k) {
      double ref = 0;
      for (int64_t n = 0; n < N; ++n) ref += sv[bm * N + n] * bv[k * N + n];
      CHECK(ga[bm * K + k] == doctest::Approx(ref).epsilon(1e-13));
    }
}

TEST_CASE("backward releases saved tensors and nodes") {
  Tensor x = leaf({1.0, 2.0, 3.0}, {3});
  std::weak_ptr<Storage> saved;
  std::weak_ptr<autograd::Node> node;
  Tensor loss;
  {
    Tensor w = Tensor::from_vector(std::vector<double>{4.0, 5.0, 6.0});  // constant, saved by mul
    saved = w.impl()->storage;
    Tensor y = mul(x, w);
    node = y.impl()->grad_fn;
    loss = sum(gelu(y));
  }
  CHECK_FALSE(saved.expired());  // the graph holds it until backward
  CHECK_FALSE(node.expired());
  backward(loss);
  CHECK(saved.expired());
  CHECK(node.expired());  // the input tensor y was only held by the gelu node
  CHECK(x.grad().defined());
  // a graph that is dropped without backward is released too
  {
    Tensor w = Tensor::from_vector(std::vector<double>{4.0, 5.0, 6.0});
    saved = w.impl()->storage;
    Tensor y = sum(mul(x, w));
  }
  CHECK(saved.expired());
}

TEST_CASE("long chains: backward and release without deep recursion") {
  const int n = 200000;
  Tensor x = leaf({1.0}, {1});
  Tensor y = x;
  for (int i = 0; i < n; ++i) y = scale(y, 1.0);
  backward(sum(y));
  CHECK(grad_values(x) == std::vector<double>{1.0});
  y = x;
  std::weak_ptr<autograd::Node> first;
  for (int i = 0; i < n; ++i) {
    y = add(y, x);
    if (i == 0) first = y.impl()->grad_fn;
  }
  CHECK_FALSE(first.expired());
  y = Tensor();  // dropped unused: released through a worklist (recursion would overflow the stack)
  CHECK(first.expired());
}

TEST_CASE("in-place writes: refused on tensors that require grad, detected on saved tensors") {
  Tensor x = leaf({1.0, 2.0}, {2});
  CHECK_THROWS_WITH_AS(x.fill_(0.0), doctest::Contains("Tensor::fill_: argument 'self': expected a tensor that does not require grad"), Error);
  CHECK_THROWS_WITH_AS(x.copy_(Tensor::zeros({2}, DType::f64)), doctest::Contains("Tensor::copy_: argument 'self'"), Error);
  CHECK_THROWS_WITH_AS(axpy_(x, 1.0, Tensor::zeros({2}, DType::f64)), doctest::Contains("axpy_: argument 'y': expected a tensor that does not require grad"), Error);
  {
    NoGradGuard g;
    x.copy_(Tensor::from_vector(std::vector<double>{3.0, 4.0}));
  }
  CHECK(test::values(x) == std::vector<double>{3.0, 4.0});
  // a constant saved by mul and changed before backward
  Tensor c = Tensor::from_vector(std::vector<double>{5.0, 6.0});
  Tensor loss = sum(mul(x, c));
  c.fill_(0.0);
  CHECK_THROWS_WITH_AS(backward(loss), doctest::Contains("saved by 'mul' was written in place"), Error);
  // the same through a detached alias of a leaf, under NoGradGuard
  Tensor loss2 = sum(gelu(x));
  {
    NoGradGuard g;
    Tensor alias = x.detach();
    axpy_(alias, 1.0, Tensor::ones({2}, DType::f64));
  }
  CHECK_THROWS_WITH_AS(backward(loss2), doctest::Contains("saved by 'gelu'"), Error);
  // ops whose gradient does not read the values do not care
  Tensor loss3 = sum(add(x, c));
  c.fill_(1.0);
  backward(loss3);
  CHECK(x.grad().defined());
  // axpy_ does not take a gradient-carrying x
  CHECK_THROWS_WITH_AS(axpy_(c, 1.0, x), doctest::Contains("axpy_: has no gradient"), Error);
}

OCTET_CUDA_TEST("to(device) is differentiable both ways") {
  Tensor x = leaf({1.0, -2.0, 3.0}, {3});
  Tensor y = mul(x.to(Device::cuda(0)), x.to(Device::cuda(0)));  // on the GPU
  Tensor loss = sum(scale(y.to(Device::cpu()), 0.5));
  backward(loss);
  CHECK(x.grad().device() == Device::cpu());
  CHECK(grad_values(x) == std::vector<double>{1.0, -2.0, 3.0});
}

// ---- differentiable ops ----------------------------------------------------------------------

namespace {

struct OpCase {
  const char* name;
  std::vector<Shape> shapes;
  std::vector<bool> grad;  // which inputs require grad
  test::GradFn f;
  test::GradcheckOptions opt = {};
};

// to(dtype) goes one step along f64 -> f32 -> f16 -> bf16 -> f32.
DType next_dtype(DType t) {
  switch (t) {
    case DType::f64: return DType::f32;
    case DType::f32: return DType::f16;
    case DType::f16: return DType::bf16;
    default: return DType::f32;
  }
}

std::vector<OpCase> op_cases() {
  using V = const std::vector<Tensor>&;
  // to(): the output is f32, so the step is large to keep its rounding (|x| 2^-24) out of the
  // difference quotient: a linear function has no truncation error, the rounding adds < 1e-6.
  test::GradcheckOptions coarse;
  coarse.eps = 0.25;
  coarse.atol = 2e-6;
  return {
      {"matmul 2-D", {{5, 7}, {7, 3}}, {true, true}, [](V x) { return matmul(x[0], x[1]); }},
      {"matmul 3-D x 2-D", {{2, 5, 7}, {7, 3}}, {true, true}, [](V x) { return matmul(x[0], x[1]); }},
      {"matmul 3-D, constant a", {{3, 4, 5}, {5, 2}}, {false, true}, [](V x) { return matmul(x[0], x[1]); }},
      {"matmul 2-D, constant b", {{4, 6}, {6, 3}}, {true, false}, [](V x) { return matmul(x[0], x[1]); }},
      {"matmul x x^T", {{3, 4}}, {true}, [](V x) { return matmul(x[0], x[0].t()); }},
      {"linear 2-D with bias", {{5, 7}, {3, 7}, {3}}, {true, true, true}, [](V x) { return linear(x[0], x[1], x[2]); }},
      {"linear 3-D, no bias", {{2, 4, 6}, {5, 6}}, {true, true}, [](V x) { return linear(x[0], x[1]); }},
      {"linear, constant weight", {{4, 3}, {2, 3}}, {true, false}, [](V x) { return linear(x[0], x[1]); }},
      {"add", {{3, 5}, {3, 5}}, {true, true}, [](V x) { return add(x[0], x[1]); }},
      {"sub", {{3, 5}, {3, 5}}, {true, true}, [](V x) { return sub(x[0], x[1]); }},
      {"mul", {{3, 5}, {3, 5}}, {true, true}, [](V x) { return mul(x[0], x[1]); }},
      {"mul, constant b", {{7}, {7}}, {true, false}, [](V x) { return mul(x[0], x[1]); }},
      {"mul(x, x)", {{4, 3}}, {true}, [](V x) { return mul(x[0], x[0]); }},
      {"scale", {{3, 5}}, {true}, [](V x) { return scale(x[0], -1.7); }},
      {"add_bias 2-D", {{4, 6}, {6}}, {true, true}, [](V x) { return add_bias(x[0], x[1]); }},
      {"add_bias 3-D", {{2, 3, 5}, {5}}, {true, true}, [](V x) { return add_bias(x[0], x[1]); }},
      {"add_bias 1-D", {{6}, {6}}, {true, true}, [](V x) { return add_bias(x[0], x[1]); }},
      {"gelu", {{4, 7}}, {true}, [](V x) { return gelu(x[0]); }},
      {"mean", {{3, 5}}, {true}, [](V x) { return mean(x[0]); }},
      {"mean 3-D", {{2, 3, 4}}, {true}, [](V x) { return mean(x[0]); }},
      {"sum", {{3, 5}}, {true}, [](V x) { return sum(x[0]); }},
      {"sum 1-D", {{9}}, {true}, [](V x) { return sum(x[0]); }},
      {"mse_loss", {{4, 5}, {4, 5}}, {true, true}, [](V x) { return mse_loss(x[0], x[1]); }},
      {"mse_loss, constant target", {{2, 3, 3}, {2, 3, 3}}, {true, false}, [](V x) { return mse_loss(x[0], x[1]); }},
      {"abs", {{17}}, {true}, [](V x) { return abs(x[0]); }},
      {"sum_rows 3-D", {{3, 4, 5}}, {true}, [](V x) { return sum_rows(x[0]); }},
      {"sum_rows 2-D", {{7, 3}}, {true}, [](V x) { return sum_rows(x[0]); }},
      {"sum_rows 1-D", {{5}}, {true}, [](V x) { return sum_rows(x[0]); }},
      {"to(dtype)", {{3, 4}}, {true}, [](V x) { return x[0].to(next_dtype(x[0].dtype())); }, coarse},
      {"t", {{4, 6}}, {true}, [](V x) { return x[0].t(); }},
      {"reshape", {{4, 6}}, {true}, [](V x) { return x[0].reshape({2, -1, 3}); }},
      {"narrow", {{5, 3}}, {true}, [](V x) { return x[0].narrow(0, 1, 3); }},
      {"narrow 3-D, negative start, then reshape", {{4, 2, 3}}, {true},
       [](V x) { return x[0].narrow(-3, -3, 2).reshape({-1}); }},
      {"clone", {{3, 5}}, {true}, [](V x) { return x[0].clone(); }},
      {"chain: mean(gelu(x W^T + b)^2)", {{3, 4}, {5, 4}, {5}}, {true, true, true},
       [](V x) {
         Tensor h = gelu(add_bias(matmul(x[0], x[1].t()), x[2]));
         return mean(mul(h, h));
       }},
  };
}

std::vector<Tensor> case_inputs(const OpCase& c, uint64_t seed) {
  manual_seed(seed);
  std::vector<Tensor> in;
  for (size_t i = 0; i < c.shapes.size(); ++i) {
    Tensor t = randn(c.shapes[i], DType::f64);
    if (c.grad[i]) t.requires_grad_();
    in.push_back(t);
  }
  return in;
}

// Runs case c in dtype t on device d and in f64 on the CPU from the same (rounded) inputs and
// seed; returns the relative error of {output, grads} over the unit roundoff of the coarsest
// dtype involved.
double error_in_ulps(const OpCase& c, DType t, Device d, uint64_t seed) {
  const std::vector<Tensor> in = test::converted(case_inputs(c, seed), t, d);
  const std::vector<Tensor> ref_in = test::converted(in, DType::f64, Device::cpu());
  Tensor probe;
  {
    NoGradGuard g;
    probe = c.f(in);
  }
  Tensor seed_t = randn(probe.shape(), DType::f64).to(probe.dtype(), d);
  Tensor ref_out;
  {
    NoGradGuard g;
    ref_out = c.f(ref_in);
  }
  const std::vector<Tensor> got = test::grads_of(c.f, in, seed_t);
  const std::vector<Tensor> ref = test::grads_of(c.f, ref_in, seed_t.to(ref_out.dtype(), Device::cpu()));
  CHECK(got[0].dtype() == probe.dtype());
  CHECK(got[0].device() == d);
  for (size_t i = 0; i < in.size(); ++i) {
    CHECK(got[i + 1].defined() == c.grad[i]);
    if (got[i + 1].defined()) {
      CHECK(got[i + 1].dtype() == in[i].dtype());
      CHECK(got[i + 1].device() == d);
    }
  }
  const double u = std::max(test::unit_roundoff(t), test::unit_roundoff(probe.dtype()));
  return test::rel_error_all(got, ref) / u;
}

// Each value passes through a few ops rounded to the dtype (an input rounding is shared with the
// reference), each off by at most u relative; sums are accumulated in f32 or wider. 8u bounds
// the norm-wise error of the longest chain here (mse_loss, the Linear chain: about 5 roundings).
constexpr double kUlps = 8.0;

}  // namespace

TEST_CASE("gradcheck: every differentiable op, f64 on the CPU") {
  for (const OpCase& c : op_cases()) {
    CAPTURE(c.name);
    const test::GradcheckResult r = test::gradcheck(c.f, case_inputs(c, 100), c.opt);
    CHECK_MESSAGE(r.ok, r.report);
  }
}

TEST_CASE("gradcheck catches a wrong gradient") {
  // a gelu whose recorded gradient is a constant 0.5, recorded through the public API
  test::GradFn wrong = [](const std::vector<Tensor>& x) {
    Tensor out = gelu(x[0].detach());
    autograd::record("wrong_gelu", {x[0]}, out, [](const Tensor& g) {
      return std::vector<Tensor>{mul(g, Tensor::full(g.shape(), 0.5, g.dtype(), g.device()))};
    });
    return out;
  };
  manual_seed(5);
  const test::GradcheckResult r = test::gradcheck(wrong, {randn({4}, DType::f64).requires_grad_()});
  CHECK_FALSE(r.ok);
  CHECK(r.report.find("analytic") != std::string::npos);
  // and the probe mode as well
  test::GradcheckOptions probes;
  probes.max_full = 0;
  CHECK_FALSE(test::gradcheck(wrong, {randn({4}, DType::f64).requires_grad_()}, probes).ok);
  CHECK(test::gradcheck([](const std::vector<Tensor>& x) { return gelu(x[0]); },
                        {randn({4}, DType::f64).requires_grad_()}, probes).ok);
  // a function whose output does not require grad fails
  CHECK_FALSE(test::gradcheck([](const std::vector<Tensor>& x) { return x[0].detach(); },
                              {randn({3}, DType::f64).requires_grad_()}).ok);
}

TEST_CASE("empty tensors: gradients of the right (empty) shapes") {
  Tensor a = Tensor::zeros({3, 0}, DType::f64).requires_grad_(), b = Tensor::zeros({0, 2}, DType::f64).requires_grad_();
  Tensor y = matmul(a, b);  // (3, 2) zeros
  backward(sum(y));
  CHECK(a.grad().shape() == Shape{3, 0});
  CHECK(b.grad().shape() == Shape{0, 2});
  Tensor e = Tensor::zeros({0, 4}, DType::f32).requires_grad_(), bias = Tensor::zeros({4}, DType::f32).requires_grad_();
  backward(sum(gelu(add_bias(e, bias))));
  CHECK(e.grad().shape() == Shape{0, 4});
  CHECK(test::values(bias.grad()) == std::vector<double>{0, 0, 0, 0});
  Tensor m = Tensor::zeros({0}, DType::f32).requires_grad_();
  backward(mean(m));
  CHECK(m.grad().numel() == 0);
}

namespace {
void check_dtypes(Device d) {
  for (DType t : {DType::f64, DType::f32, DType::f16, DType::bf16}) {
    double worst = 0;
    for (const OpCase& c : op_cases()) {
      CAPTURE(dtype_name(t));
      CAPTURE(c.name);
      const double ulps = error_in_ulps(c, t, d, 200);
      CHECK(ulps <= kUlps);
      worst = std::max(worst, ulps);
    }
    MESSAGE(dtype_name(t), " on ", d.str(), ": worst error ", worst, " units of roundoff");
  }
}
}  // namespace

OCTET_TEST_BOTH("every differentiable op in f64, f32, f16 and bf16 against its f64 gradients", check_dtypes)

OCTET_CUDA_TEST("CPU and CUDA agree on every op's output and gradients in f32") {
  for (const OpCase& c : op_cases()) {
    CAPTURE(c.name);
    const std::vector<Tensor> in = test::converted(case_inputs(c, 300), DType::f32, Device::cpu());
    Tensor probe;
    {
      NoGradGuard g;
      probe = c.f(in);
    }
    Tensor seed = randn(probe.shape(), DType::f64).to(probe.dtype());
    const auto cpu = test::grads_of(c.f, in, seed);
    const auto gpu = test::grads_of(c.f, test::converted(in, DType::f32, Device::cuda(0)), seed.to(Device::cuda(0)));
    CHECK(test::rel_error_all(gpu, cpu) <= 2 * kUlps * test::unit_roundoff(probe.dtype()));
  }
}

OCTET_CUDA_TEST("gradcheck through CUDA in f64") {
  for (const OpCase& c : op_cases()) {
    CAPTURE(c.name);
    test::GradFn on_gpu = [&c](const std::vector<Tensor>& x) {
      std::vector<Tensor> g;
      for (const Tensor& t : x) g.push_back(t.to(Device::cuda(0)));
      return c.f(g).to(Device::cpu());
    };
    const test::GradcheckResult r = test::gradcheck(on_gpu, case_inputs(c, 400), c.opt);
    CHECK_MESSAGE(r.ok, r.report);
  }
}
