// nn family. Linear, initializers and sgd_step: shapes, PyTorch's init distributions, forward
// against an f64 reference in every dtype, gradchecks, a two-layer MLP whose f32 gradients match
// its f64 twin and whose SGD training lowers the loss, CPU against CUDA, argument errors.
#include <cmath>
#include <memory>

#include "tests/gradcheck.hpp"
#include "tests/helpers.hpp"

using namespace octet;

namespace {

const DType kFloats[] = {DType::f32, DType::f64, DType::f16, DType::bf16};

// Largest |v| that rounding may give for a U(-b, b) draw made in f32 (f64) and stored in t:
// lo + (hi - lo) u costs three roundings in the draw dtype, one more in t.
double max_draw(double b, DType t) {
  const double u_draw = test::unit_roundoff(t == DType::f64 ? DType::f64 : DType::f32);
  return b * (1 + 3 * u_draw) * (1 + test::unit_roundoff(t));
}

// Checks that v looks like n draws of U(-b, b): inside the range, reaching close to its ends,
// mean and variance within 5 standard errors.
void check_uniform(const std::vector<double>& v, double b, DType t) {
  REQUIRE(v.size() >= 1000);
  const double n = static_cast<double>(v.size());
  double mx = 0, s = 0, s2 = 0;
  for (double x : v) {
    mx = std::max(mx, std::fabs(x));
    s += x;
    s2 += x * x;
  }
  const double mean = s / n, var = s2 / n - mean * mean;
  CHECK(mx <= max_draw(b, t));
  CHECK(mx >= 0.98 * b);  // P(all |x| < 0.98 b) = 0.98^n < 2e-9 for n >= 1000
  CHECK(std::fabs(mean) <= 5 * b / std::sqrt(3 * n));
  // Var(x^2) for U(-b, b) is b^4 (1/5 - 1/9)
  CHECK(std::fabs(var - b * b / 3) <= 5 * b * b * std::sqrt(4.0 / 45.0 / n) + 2 * test::unit_roundoff(t) * b * b);
}

// Norm-wise relative error allowed for sums of k products in dtype t, against f64: one rounding
// of each result to t (u_t), and k roundings in the accumulation dtype (f32, f64 for f64) whose
// independent errors grow like sqrt(k) u_acc; twice that for margin.
double linear_bound(DType t, int64_t k) {
  const double u_acc = test::unit_roundoff(t == DType::f64 ? DType::f64 : DType::f32);
  return 2 * (test::unit_roundoff(t) + std::sqrt(static_cast<double>(k)) * u_acc);
}

// x W^T + b in f64 on the host.
std::vector<double> linear_ref(const std::vector<double>& x, const std::vector<double>& w, const std::vector<double>& b,
                               int64_t rows, int64_t in, int64_t out) {
  std::vector<double> y(static_cast<size_t>(rows * out));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double acc = b.empty() ? 0.0 : b[static_cast<size_t>(o)];
      for (int64_t i = 0; i < in; ++i) acc += x[static_cast<size_t>(r * in + i)] * w[static_cast<size_t>(o * in + i)];
      y[static_cast<size_t>(r * out + o)] = acc;
    }
  return y;
}

// A two-layer MLP: Linear -> gelu -> Linear.
struct Mlp {
  nn::Linear l1, l2;
  Mlp(int64_t in, int64_t hidden, int64_t out, Device d, DType t) : l1(in, hidden, true, d, t), l2(hidden, out, true, d, t) {}
  Tensor forward(const Tensor& x) { return l2.forward(gelu(l1.forward(x))); }
  std::vector<Tensor> parameters() const {
    auto p = l1.parameters(), q = l2.parameters();
    p.insert(p.end(), q.begin(), q.end());
    return p;
  }
};

// A copy of m's parameters in dtype t on device d (fresh leaves).
void copy_parameters(const Mlp& from, Mlp& to) {
  NoGradGuard g;
  auto src = from.parameters(), dst = to.parameters();
  for (size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i]);
}

std::vector<Tensor> grads(const std::vector<Tensor>& params) {
  std::vector<Tensor> g;
  for (const Tensor& p : params) g.push_back(p.grad());
  return g;
}

}  // namespace

// ---- initializers ----------------------------------------------------------------------------

namespace {
void check_linear_init(Device d) {
  for (DType t : kFloats) {
    CAPTURE(dtype_name(t));
    manual_seed(7);
    nn::Linear l(300, 1031, true, d, t);
    CHECK(l.in_features == 300);
    CHECK(l.out_features == 1031);
    CHECK(l.weight.shape() == Shape{1031, 300});
    CHECK(l.bias.shape() == Shape{1031});
    for (const Tensor& p : l.parameters()) {
      CHECK(p.dtype() == t);
      CHECK(p.device() == d);
      CHECK(p.requires_grad());
      CHECK(p.is_leaf());
      CHECK_FALSE(p.grad().defined());
    }
    const double b = 1 / std::sqrt(300.0);
    check_uniform(test::values(l.weight), b, t);
    check_uniform(test::values(l.bias), b, t);
    // the same seed gives the same layer, another seed another one
    manual_seed(7);
    nn::Linear again(300, 1031, true, d, t);
    CHECK(test::bitwise_equal(again.weight, l.weight));
    CHECK(test::bitwise_equal(again.bias, l.bias));
    nn::Linear next(300, 1031, true, d, t);
    CHECK_FALSE(test::bitwise_equal(next.weight, l.weight));
  }
  nn::Linear no_bias(4, 3, false, d);
  CHECK_FALSE(no_bias.bias.defined());
  CHECK(no_bias.parameters().size() == 1);
  CHECK(no_bias.parameters()[0].same(no_bias.weight));
  // in_features = 0: an empty weight, a zero bias, and forward gives the bias
  nn::Linear empty(0, 3, true, d);
  CHECK(empty.weight.shape() == Shape{3, 0});
  CHECK(test::values(empty.bias) == std::vector<double>{0, 0, 0});
  CHECK(test::values(empty.forward(Tensor::zeros({2, 0}, DType::f32, d))) == std::vector<double>(6, 0.0));
}

void check_init_functions(Device d) {
  for (DType t : kFloats) {
    CAPTURE(dtype_name(t));
    Tensor w = test::poisoned({40, 60}, t, d);
    nn::init::xavier_uniform_(w, 2.0);
    check_uniform(test::values(w), 2.0 * std::sqrt(6.0 / 100.0), t);
    Tensor k = test::poisoned({30, 5, 7}, t, d);  // fan_in = 35, fan_out = 210
    nn::init::xavier_uniform_(k);
    check_uniform(test::values(k), std::sqrt(6.0 / 245.0), t);
    nn::init::kaiming_uniform_(k);
    check_uniform(test::values(k), std::sqrt(6.0 / 35.0), t);
    nn::init::kaiming_uniform_(k, std::sqrt(5.0));
    check_uniform(test::values(k), 1 / std::sqrt(35.0), t);
    Tensor u = test::poisoned({1001}, t, d);
    nn::init::uniform_(u, -3.0, 5.0);
    auto v = test::values(u);
    for (double& x : v) x -= 1.0;  // U(-4, 4)
    check_uniform(v, 4.0, t);
    nn::init::uniform_(u, 2.5, 2.5);
    CHECK(test::values(u) == std::vector<double>(1001, 2.5));
  }
  Tensor e = Tensor::empty({0, 5}, DType::f32, d);
  nn::init::xavier_uniform_(e);  // nothing to do
  CHECK(e.numel() == 0);
}
}  // namespace

OCTET_TEST_BOTH("Linear: shapes, parameters and PyTorch's default init", check_linear_init)
OCTET_TEST_BOTH("xavier_uniform_, kaiming_uniform_, uniform_", check_init_functions)

TEST_CASE("initializers: errors, no recording, saved tensors") {
  Tensor v = Tensor::zeros({5});
  CHECK_THROWS_WITH_AS(nn::init::xavier_uniform_(v), doctest::Contains("xavier_uniform_: argument 't': expected 2 to 8 dimensions, got 1"), Error);
  CHECK_THROWS_WITH_AS(nn::init::kaiming_uniform_(v), doctest::Contains("kaiming_uniform_: argument 't'"), Error);
  Tensor i = Tensor::zeros({3, 3}, DType::i32);
  CHECK_THROWS_WITH_AS(nn::init::xavier_uniform_(i), doctest::Contains("expected dtype f32, f64, f16 or bf16, got dtype i32"), Error);
  CHECK_THROWS_WITH_AS(nn::init::uniform_(i, 0, 1), doctest::Contains("uniform_: argument 't'"), Error);
  Tensor w = Tensor::zeros({3, 3});
  CHECK_THROWS_WITH_AS(nn::init::uniform_(w, 1.0, 0.0), doctest::Contains("uniform_: argument 'lo, hi': expected finite bounds with lo <= hi, got 1, 0"), Error);
  CHECK_THROWS_WITH_AS(nn::init::uniform_(w, 0.0, INFINITY), doctest::Contains("finite bounds"), Error);
  CHECK_THROWS_WITH_AS(nn::init::xavier_uniform_(w, NAN), doctest::Contains("argument 'gain'"), Error);
  // a parameter that requires grad is initialized in place without recording
  w.requires_grad_();
  const void* before = w.data();
  nn::init::xavier_uniform_(w);
  CHECK(w.data() == before);
  CHECK(w.is_leaf());
  CHECK(grad_enabled());
  // re-initializing a weight that a pending graph saved makes that backward throw
  Tensor loss = sum(gelu(w));
  nn::init::uniform_(w, -1, 1);
  CHECK_THROWS_WITH_AS(backward(loss), doctest::Contains("written in place"), Error);
}

OCTET_CUDA_TEST("Linear and the initializers give the same bits on the CPU and CUDA") {
  for (DType t : kFloats) {
    CAPTURE(dtype_name(t));
    manual_seed(21);
    nn::Linear c(33, 17, true, Device::cpu(), t);
    manual_seed(21);
    nn::Linear g(33, 17, true, Device::cuda(0), t);
    CHECK(test::bitwise_equal(c.weight, g.weight));
    CHECK(test::bitwise_equal(c.bias, g.bias));
    Tensor xc = Tensor::empty({9, 10}, t), xg = Tensor::empty({9, 10}, t, Device::cuda(0));
    manual_seed(22);
    nn::init::xavier_uniform_(xc);
    manual_seed(22);
    nn::init::xavier_uniform_(xg);
    CHECK(test::bitwise_equal(xc, xg));
  }
}

// ---- Linear forward and backward -------------------------------------------------------------

namespace {
void check_linear_forward(Device d) {
  for (DType t : kFloats) {
    for (bool with_bias : {true, false}) {
      for (const Shape& xs : {Shape{7, 37}, Shape{3, 5, 37}, Shape{0, 37}, Shape{2, 0, 37}}) {
        CAPTURE(dtype_name(t));
        CAPTURE(with_bias);
        CAPTURE(shape_str(xs));
        manual_seed(31);
        nn::Linear l(37, 11, with_bias, d, t);
        Tensor x = randn(xs, DType::f64).to(t, d);
        Tensor y = l.forward(x);
        Shape ys = xs;
        ys.back() = 11;
        REQUIRE(y.shape() == ys);
        CHECK(y.dtype() == t);
        CHECK(y.device() == d);
        CHECK(y.requires_grad());
        const int64_t rows = x.numel() / 37;
        const auto ref = linear_ref(test::values(x), test::values(l.weight),
                                    with_bias ? test::values(l.bias) : std::vector<double>{}, rows, 37, 11);
        const double bound = linear_bound(t, 37);
        if (rows > 0) CHECK(test::rel_error(y.to(DType::f64), Tensor::from_vector(ref, ys)) <= bound);
      }
    }
  }
}

// Linear's forward with its parameters replaced by inputs 1 (and 2), for gradient checks.
test::GradFn linear_fn(std::shared_ptr<nn::Linear> l) {
  return [l](const std::vector<Tensor>& in) {
    l->weight = in[1];
    if (in.size() > 2) l->bias = in[2];
    return l->forward(in[0]);
  };
}

std::vector<Tensor> linear_inputs(const nn::Linear& l, const Shape& xs) {
  return {randn(xs, l.weight.dtype(), l.weight.device()).requires_grad_(), l.weight, l.bias};
}
}  // namespace

OCTET_TEST_BOTH("Linear forward against an f64 reference", check_linear_forward)

TEST_CASE("gradcheck: Linear (2-D and 3-D input) and the MLP, f64 on the CPU") {
  manual_seed(41);
  for (const Shape& xs : {Shape{4, 5}, Shape{2, 3, 5}}) {
    CAPTURE(shape_str(xs));
    auto l = std::make_shared<nn::Linear>(5, 4, true, Device::cpu(), DType::f64);
    const test::GradcheckResult r = test::gradcheck(linear_fn(l), linear_inputs(*l, xs));
    CHECK_MESSAGE(r.ok, r.report);
    auto nb = std::make_shared<nn::Linear>(5, 4, false, Device::cpu(), DType::f64);
    const test::GradcheckResult r2 = test::gradcheck(linear_fn(nb), {randn(xs, DType::f64).requires_grad_(), nb->weight});
    CHECK_MESSAGE(r2.ok, r2.report);
  }
  auto m = std::make_shared<Mlp>(4, 6, 3, Device::cpu(), DType::f64);
  test::GradFn mlp = [m](const std::vector<Tensor>& in) {
    m->l1.weight = in[1];
    m->l1.bias = in[2];
    m->l2.weight = in[3];
    m->l2.bias = in[4];
    return mean(m->forward(in[0]));
  };
  std::vector<Tensor> in{randn({2, 3, 4}, DType::f64).requires_grad_()};
  for (const Tensor& p : m->parameters()) in.push_back(p);
  const test::GradcheckResult r = test::gradcheck(mlp, in);
  CHECK_MESSAGE(r.ok, r.report);
}

namespace {
// Linear in dtype t on device d against the same layer in f64 on the CPU.
void check_linear_grads(Device d) {
  for (DType t : kFloats) {
    CAPTURE(dtype_name(t));
    manual_seed(51);
    auto l = std::make_shared<nn::Linear>(13, 9, true, d, t);
    const std::vector<Tensor> in = linear_inputs(*l, {3, 4, 13});
    const std::vector<Tensor> ref_in = test::converted(in, DType::f64, Device::cpu());
    Tensor seed = randn({3, 4, 9}, DType::f64).to(t, d);
    const auto got = test::grads_of(linear_fn(l), in, seed);
    auto l64 = std::make_shared<nn::Linear>(13, 9, true, Device::cpu(), DType::f64);
    const auto ref = test::grads_of(linear_fn(l64), ref_in, seed.to(DType::f64, Device::cpu()));
    for (size_t i = 1; i < got.size(); ++i) {
      CHECK(got[i].dtype() == t);
      CHECK(got[i].device() == d);
    }
    CHECK(test::rel_error_all(got, ref) <= linear_bound(t, 13));  // sums of <= 13 products
  }
}
}  // namespace

OCTET_TEST_BOTH("Linear gradients in every dtype against f64", check_linear_grads)

TEST_CASE("Linear argument errors") {
  nn::Linear l(5, 3);
  CHECK_THROWS_WITH_AS(l.forward(Tensor::zeros({4, 6})), doctest::Contains("Linear::forward: argument 'x': expected last dimension 5 (in_features), got shape (4, 6)"), Error);
  CHECK_THROWS_WITH_AS(l.forward(Tensor::zeros({4, 5}, DType::f64)), doctest::Contains("Linear::forward: argument 'x': expected dtype f32, got dtype f64"), Error);
  CHECK_THROWS_WITH_AS(l.forward(Tensor::zeros({5})), doctest::Contains("expected 2 to 3 dimensions, got 1"), Error);
  CHECK_THROWS_WITH_AS(l.forward(Tensor::zeros({1, 2, 3, 5})), doctest::Contains("expected 2 to 3 dimensions, got 4"), Error);
  CHECK_THROWS_WITH_AS(l.forward(Tensor()), doctest::Contains("argument 'x': expected a defined tensor"), Error);
  CHECK_THROWS_WITH_AS(nn::Linear(-1, 3), doctest::Contains("Linear: argument 'in_features': expected a non-negative size, got -1"), Error);
  CHECK_THROWS_WITH_AS(nn::Linear(3, -2), doctest::Contains("argument 'out_features'"), Error);
  CHECK_THROWS_WITH_AS(nn::Linear(3, 2, true, Device::cpu(), DType::i32), doctest::Contains("Linear: argument 'dtype': expected f32, f64, f16 or bf16, got i32"), Error);
  CHECK_THROWS_WITH_AS(nn::Linear(3, 2, true, Device::cpu(), DType::f8_e4m3), doctest::Contains("argument 'dtype'"), Error);
  if (!test::has_gpu()) CHECK_THROWS_AS(nn::Linear(3, 2, true, Device::cuda(0)), Error);
}

OCTET_CUDA_TEST("Linear: x on another device") {
  nn::Linear l(5, 3, true, Device::cuda(0));
  CHECK_THROWS_WITH_AS(l.forward(Tensor::zeros({4, 5})), doctest::Contains("Linear::forward: argument 'x': expected a tensor on cuda:0, got a tensor on cpu"), Error);
}

// ---- sgd_step --------------------------------------------------------------------------------

namespace {
void check_sgd(Device d) {
  for (DType t : kFloats) {
    CAPTURE(dtype_name(t));
    manual_seed(61);
    Tensor p = randn({37}, t, d).requires_grad_(), q = randn({5}, t, d).requires_grad_();
    Tensor c = randn({37}, t, d);
    backward(sum(mul(p, c)));  // p.grad() = c; q gets none
    const auto p0 = test::values(p), q0 = test::values(q), g0 = test::values(p.grad());
    nn::sgd_step({p, q}, 0.1);
    CHECK(test::values(q) == q0);
    CHECK(test::values(p.grad()) == g0);  // gradients stay
    CHECK(p.is_leaf());
    Tensor expect = Tensor::from_vector(p0).to(t, d);
    {
      NoGradGuard g;
      axpy_(expect, -0.1, Tensor::from_vector(g0).to(t, d));
    }
    CHECK(test::bitwise_equal(p, expect));
    for (size_t i = 0; i < p0.size(); ++i)
      CHECK(test::values(p)[i] == doctest::Approx(p0[i] - 0.1 * g0[i]).epsilon(2 * test::unit_roundoff(t)).scale(1));
  }
}
}  // namespace

OCTET_TEST_BOTH("sgd_step", check_sgd)

TEST_CASE("sgd_step errors and its interplay with the tape") {
  Tensor p = Tensor::zeros({3}).requires_grad_();
  CHECK_THROWS_WITH_AS(nn::sgd_step({p}, -0.1), doctest::Contains("sgd_step: argument 'lr': expected a finite learning rate >= 0, got -0.1"), Error);
  CHECK_THROWS_WITH_AS(nn::sgd_step({p}, NAN), doctest::Contains("argument 'lr'"), Error);
  Tensor q = Tensor::zeros({2});
  q.requires_grad_();
  // set_grad refuses a gradient that does not fit (test_tensor); sgd_step checks again, for
  // gradients put in place otherwise (here through the TensorImpl)
  q.impl()->grad = Tensor::ones({3}).impl_ptr();
  backward(sum(p));
  CHECK_THROWS_WITH_AS(nn::sgd_step({p, q}, 0.1), doctest::Contains("sgd_step: argument 'parameters[1].grad()': expected shape (2,), got shape (3,)"), Error);
  CHECK(test::values(p) == std::vector<double>{0, 0, 0});  // nothing was written
  q.impl()->grad = Tensor::ones({2}, DType::f64).impl_ptr();
  CHECK_THROWS_WITH_AS(nn::sgd_step({q}, 0.1), doctest::Contains("parameters[0].grad()': expected dtype f32"), Error);
  CHECK_THROWS_WITH_AS(nn::sgd_step({Tensor()}, 0.1), doctest::Contains("parameters[0]': expected a defined tensor"), Error);
  // a step between a forward and its backward is caught
  Tensor loss = sum(mul(p, p));
  nn::sgd_step({p}, 0.1);
  CHECK_THROWS_WITH_AS(backward(loss), doctest::Contains("written in place"), Error);
}

// ---- the MLP ---------------------------------------------------------------------------------

namespace {
// f32 gradients of mean(MLP(x)) against the same model and input in f64 (on the CPU).
void check_mlp_grads(Device d) {
  manual_seed(71);
  Mlp m(13, 32, 5, d, DType::f32);
  Mlp m64(13, 32, 5, Device::cpu(), DType::f64);
  copy_parameters(m, m64);
  Tensor x = randn({3, 7, 13}, DType::f32, d);
  backward(mean(m.forward(x)));
  backward(mean(m64.forward(x.to(DType::f64, Device::cpu()))));
  const auto g32 = grads(m.parameters()), g64 = grads(m64.parameters());
  for (const Tensor& g : g32) CHECK(g.dtype() == DType::f32);
  // Each gradient entry is a sum of at most 32 products (or 21 batch rows) accumulated in f32,
  // after a few elementwise roundings (gelu, its derivative, mean): as linear_bound(f32, 36).
  const double bound = linear_bound(DType::f32, 36);
  const double err = test::rel_error_all(g32, g64);
  CHECK(err <= bound);
  MESSAGE("MLP f32 vs f64 gradients on ", d.str(), ": relative error ", err, " (bound ", bound, ")");
}

// SGD on mse_loss(MLP(x), teacher(x)) lowers the loss.
void check_mlp_training(Device d) {
  manual_seed(81);
  Mlp m(13, 32, 5, d, DType::f32);
  nn::Linear teacher(13, 5, true, d, DType::f32);
  Tensor x = randn({64, 13}, DType::f32, d), target;
  {
    NoGradGuard g;
    target = teacher.forward(x);
  }
  std::vector<double> losses;
  for (int step = 0; step < 200; ++step) {
    for (Tensor& p : m.parameters()) p.zero_grad();
    Tensor loss = mse_loss(m.forward(x), target);
    backward(loss);
    nn::sgd_step(m.parameters(), 0.2);
    losses.push_back(loss.item());
  }
  MESSAGE("MLP training on ", d.str(), ": loss ", losses.front(), " -> ", losses.back());
  for (double l : losses) CHECK(std::isfinite(l));
  CHECK(losses[1] < losses[0]);
  CHECK(losses.back() < 0.25 * losses.front());
}
}  // namespace

OCTET_TEST_BOTH("two-layer MLP: f32 gradients match the f64 model", check_mlp_grads)
OCTET_TEST_BOTH("two-layer MLP: SGD lowers the loss", check_mlp_training)

OCTET_CUDA_TEST("Linear and the MLP: CPU and CUDA agree in f32, forward and backward") {
  manual_seed(91);
  Mlp c(13, 32, 5, Device::cpu(), DType::f32);
  manual_seed(91);
  Mlp g(13, 32, 5, Device::cuda(0), DType::f32);
  Tensor x = randn({3, 7, 13});
  Tensor yc = c.forward(x), yg = g.forward(x.to(Device::cuda(0)));
  // each side within linear_bound(f32, 36) of the exact values (see the f64 test above)
  const double bound = 2 * linear_bound(DType::f32, 36);
  CHECK(test::rel_error(yg, yc) <= bound);
  backward(mean(yc));
  backward(mean(yg));
  CHECK(test::rel_error_all(grads(g.parameters()), grads(c.parameters())) <= bound);
}
