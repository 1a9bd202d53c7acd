// Tests of nn::LinearFP8 (the fp8_gemm suite, part two), on the CPU emulation and on CUDA: exact
// casts pin forward, grad_x, grad_W and grad_b to f32 GEMMs; bitsandbytes' test_fp8linear model
// (forward, gradients, training) against f32 with bitsandbytes' thresholds; the FP8 weight cache;
// 3-D input, no bias, an empty batch and no-grad.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "tests/fp8_gemm_test_helpers.hpp"

using namespace octet;
using namespace octet::fp8_gemm_test;

namespace {

// ---- nn::LinearFP8 -----------------------------------------------------------------------------

Tensor linear_ref(const Tensor& x, const Tensor& w, const Tensor& b) { return add_bias(matmul(x, w.t()), b); }

// Operands whose casts are exact (E4M3 values with amax 448, an E5M2 output gradient with amax
// 57344: every scale is 1), so all three FP8 GEMMs must equal f32 GEMMs up to accumulation: this
// pins the row-major to cuBLASLt mapping of forward, grad_x and grad_W, on both recipes.
void check_linear_exact(Device d) {
  manual_seed(85);
  for (nn::Fp8Recipe recipe : {nn::Fp8Recipe::current, nn::Fp8Recipe::delayed}) {
    for (int64_t m : {24, 10}) {
      for (DType dt : {DType::f32, DType::bf16}) {
        CAPTURE(m);
        CAPTURE(dtype_name(dt));
        CAPTURE(static_cast<int>(recipe));
        const int64_t k = 48, n = 32;
        nn::LinearFP8 lin(k, n, true, d, dt);
        lin.recipe = recipe;
        lin.crossover_macs = 0;
        auto exact = [&](const Shape& shape, DType fp8, float top) {
          std::vector<float> v = random_fp8(shape, fp8, top / 8, Device::cpu()).to_vector<float>();
          v[3] = -top;
          return Tensor::from_vector(v, shape).to(dt, d);
        };
        {
          NoGradGuard ng;
          lin.weight.copy_(exact({n, k}, DType::f8_e4m3, 448.0f));
        }
        Tensor x = leaf(exact({m, k}, DType::f8_e4m3, 448.0f));
        Tensor g = exact({m, n}, DType::f8_e5m2, 57344.0f);
        Tensor y = lin.forward(x);
        CHECK(lin.last_forward_fp8());
        backward(y, g);
        const Tensor xf = x.detach().to(DType::f32), wf = lin.weight.detach().to(DType::f32), gf = g.to(DType::f32);
        const double acc_f = d.is_cpu() ? k * std::ldexp(1.0, -23) : (1.0 + k / 32.0) * std::ldexp(1.0, -13);
        const double acc_b = d.is_cpu() ? m * std::ldexp(1.0, -23) : std::ldexp(1.0, -11);
        auto close = [&](const Tensor& got, const Tensor& ref, const Tensor& absref, double acc) {
          const auto o = test::values(got), r = test::values(ref), ar = test::values(absref);
          REQUIRE(o.size() == r.size());
          size_t bad = 0;
          for (size_t i = 0; i < o.size(); ++i)
            if (!(std::fabs(o[i] - r[i]) <= out_eps(dt) * std::fabs(r[i]) + acc * ar[i])) ++bad;
          CHECK(bad == 0);
        };
        const Tensor y_ref = linear_ref(xf, wf, lin.bias.detach().to(DType::f32));
        close(y, y_ref, matmul(octet::abs(xf), octet::abs(wf).t()), acc_f);
        close(x.grad(), matmul(gf, wf), matmul(octet::abs(gf), octet::abs(wf)), acc_b);
        close(lin.weight.grad(), matmul(gf.t(), xf), matmul(octet::abs(gf).t(), octet::abs(xf)), acc_b);
        close(lin.bias.grad(), sum_rows(gf), sum_rows(octet::abs(gf)), std::ldexp(1.0, -20));
      }
    }
  }
}
OCTET_TEST_BOTH("LinearFP8: exact casts give f32 results in forward, grad_x, grad_W, grad_b", check_linear_exact)

struct ModelErrors {
  double out, w1_grad, b1_grad;
};

// bitsandbytes' test_fp8linear model: Linear(1024, 2048) -> gelu -> Linear(2048, 1024) on
// randn(10, 1024), backward of the output's mean, against the same model in f32.
ModelErrors fp8linear_model(Device d, nn::Fp8Recipe recipe) {
  manual_seed(42);
  Tensor inp = randn({10, 1024}).to(d);
  nn::LinearFP8 f1(1024, 2048, true, d), f2(2048, 1024, true, d);
  for (nn::LinearFP8* l : {&f1, &f2}) {
    l->crossover_macs = 0;
    l->recipe = recipe;
  }
  Tensor w1 = leaf(f1.weight), b1 = leaf(f1.bias), w2 = leaf(f2.weight), b2 = leaf(f2.bias);
  Tensor a = linear_ref(gelu(linear_ref(inp, w1, b1)), w2, b2);
  Tensor b = f2.forward(gelu(f1.forward(inp)));
  backward(mean(a));
  backward(mean(b));
  return {test::mean_abs_diff(b, a), test::mean_abs_diff(f1.weight.grad(), w1.grad()),
          test::mean_abs_diff(f1.bias.grad(), b1.grad())};
}

// Thresholds: bitsandbytes' own for this test (mean |diff| < 0.05, 2e-5, 2e-5). Measured on the
// CPU emulation: current scaling out 8.5e-3, grad_W1 3.4e-6, grad_b1 4.3e-6 (E4M3 keeps 3
// mantissa bits, a relative rounding error up to 2^-4 per operand that the K = 1024/2048 dot
// products average down; the gradients themselves are ~1e-4). Delayed scaling: out 8.4e-3,
// grad_W1 1.1e-5, grad_b1 1.0e-5: on its first step the history is empty and the output gradient
// (~1e-4) is cast with scale 1, where E5M2 has 2 mantissa bits and goes subnormal below 6e-5.
// That is the recipe's known first-step weakness, within bitsandbytes' thresholds.
void check_fp8linear_model(Device d) {
  for (nn::Fp8Recipe recipe : {nn::Fp8Recipe::current, nn::Fp8Recipe::delayed}) {
    const ModelErrors e = fp8linear_model(d, recipe);
    MESSAGE("test_fp8linear errors (", d.str(), ", recipe ", static_cast<int>(recipe), "): out ", e.out, ", w1 grad ",
            e.w1_grad, ", b1 grad ", e.b1_grad);
    CHECK(e.out < 0.05);
    CHECK(e.w1_grad < 2e-5);
    CHECK(e.b1_grad < 2e-5);
    CHECK(e.out > 0);  // FP8 rounding happened
  }
}
OCTET_TEST_BOTH("LinearFP8 on the test_fp8linear model vs f32", check_fp8linear_model)

void sgd(const std::vector<Tensor>& params, double lr) {
  NoGradGuard ng;
  for (const Tensor& p : params) axpy_(p, -lr, p.grad());
  for (Tensor p : params) p.zero_grad();
}

// 12 SGD steps (lr 4) of the test_fp8linear model fitting a random target, FP8 against f32 from
// the same start. Measured on the CPU emulation: both losses fall from 1.06 to the 1e-3 range
// (f32 8.5e-4, FP8 3.1e-3: FP8's noise floor, an output error of a few % of values of size ~1);
// while the loss is above 0.1 the two differ by at most 2.1%. Allowed: 5% above 0.1, and a
// final FP8 loss below 0.01 (a 100x fall).
void check_fp8linear_training(Device d) {
  manual_seed(7);
  Tensor inp = randn({10, 1024}).to(d), target = randn({10, 1024}).to(d);
  nn::LinearFP8 f1(1024, 2048, true, d), f2(2048, 1024, true, d);
  f1.crossover_macs = f2.crossover_macs = 0;
  Tensor w1 = leaf(f1.weight), b1 = leaf(f1.bias), w2 = leaf(f2.weight), b2 = leaf(f2.bias);
  double last = 0, worst = 0;
  for (int step = 0; step < 12; ++step) {
    Tensor loss_ref = mse_loss(linear_ref(gelu(linear_ref(inp, w1, b1)), w2, b2), target);
    Tensor loss_fp8 = mse_loss(f2.forward(gelu(f1.forward(inp))), target);
    backward(loss_ref);
    backward(loss_fp8);
    const double ref = loss_ref.item();
    last = loss_fp8.item();
    if (ref > 0.1) worst = std::max(worst, std::fabs(last - ref) / ref);
    sgd({w1, b1, w2, b2}, 4.0);
    sgd(f1.parameters(), 4.0);
    sgd(f2.parameters(), 4.0);
  }
  MESSAGE("training (", d.str(), "): final FP8 loss ", last, ", worst relative gap to f32 above 0.1: ", worst);
  CHECK(worst < 0.05);
  CHECK(last < 0.01);
}
OCTET_TEST_BOTH("LinearFP8 trains the test_fp8linear model like f32", check_fp8linear_training)

// The FP8 weight is cast once per weight version: in-place writes (copy_, axpy_) and a new
// weight tensor recast it; a raw write needs invalidate().
void check_weight_cache(Device d) {
  manual_seed(86);
  nn::LinearFP8 lin(40, 24, true, d);
  lin.crossover_macs = 0;
  Tensor x = randn({6, 40}).to(d);
  auto fresh_output = [&](const Tensor& w) {
    nn::LinearFP8 other(40, 24, true, d);
    other.crossover_macs = 0;
    NoGradGuard ng;
    other.weight.copy_(w);
    other.bias.copy_(lin.bias);
    return other.forward(x);
  };
  Tensor y0 = lin.forward(x);
  CHECK(test::bitwise_equal(lin.forward(x), y0));
  Tensor step = randn({24, 40}).to(d);
  {
    NoGradGuard ng;
    axpy_(lin.weight, 0.5, step);
  }
  Tensor y1 = lin.forward(x);
  CHECK(!test::bitwise_equal(y1, y0));
  CHECK(test::bitwise_equal(y1, fresh_output(lin.weight)));
  lin.weight = randn({24, 40}).to(d).requires_grad_();
  CHECK(test::bitwise_equal(lin.forward(x), fresh_output(lin.weight)));
  if (d.is_cpu()) {
    const Tensor before = lin.forward(x);
    std::vector<float> v(24 * 40, 0.25f);
    std::memcpy(lin.weight.data(), v.data(), v.size() * sizeof(float));  // not seen by the cache
    CHECK(test::bitwise_equal(lin.forward(x), before));
    lin.invalidate();
    CHECK(test::bitwise_equal(lin.forward(x), fresh_output(lin.weight)));
  }
}
OCTET_TEST_BOTH("LinearFP8: the FP8 weight cache follows the weight", check_weight_cache)

void check_linear_shapes(Device d) {
  manual_seed(87);
  nn::LinearFP8 lin(24, 16, false, d);
  lin.crossover_macs = 0;
  CHECK(lin.parameters().size() == 1);
  Tensor x = leaf(randn({2, 3, 24}).to(d));
  Tensor y = lin.forward(x);
  CHECK(y.shape() == Shape{2, 3, 16});
  backward(sum(y));
  CHECK(x.grad().shape() == x.shape());
  CHECK(lin.weight.grad().shape() == lin.weight.shape());
  // empty batch: an empty output, zero weight gradient
  Tensor e = leaf(Tensor::zeros({0, 24}, DType::f32, d));
  Tensor ye = lin.forward(e);
  CHECK(ye.shape() == Shape{0, 16});
  lin.weight.zero_grad();
  backward(sum(ye));
  CHECK(max_abs(lin.weight.grad()).item() == 0.0);
  // no gradient wanted: nothing recorded
  {
    NoGradGuard ng;
    CHECK(!lin.forward(x).requires_grad());
  }
}
OCTET_TEST_BOTH("LinearFP8: 3-D input, no bias, empty batch, no-grad", check_linear_shapes)

}  // namespace
