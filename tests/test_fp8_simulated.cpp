// Tests of the fp8_simulated family (matmul_fp8_mixed/global, fp8_block_sizes) and of the FP8 linear
// layers (nn::LinearFP8Mixed/Global), on both devices, against the formulas of
// docs/fp8-simulated.md ('Forward and backward'):
// - fake-quantized operands (fused kernels) must equal quantize -> dequantize bit for bit;
// - every product must lie within GEMM rounding of the f64 product of those operands
//   (check_gemm: |out - ref| <= (K + 2) 2^-24 sum|a||b| from f32 accumulation, plus half an
//   ulp of the output dtype for the final rounding);
// - golden outputs of bitsandbytes 0.49.2 (mm_mixed.*, linear_fp8_mixed.*) lie within the same
//   bound of the operands we derive from the golden inputs, so a single operand code differing
//   from bitsandbytes' would show.
// The op is not differentiable in the calculus sense (quantization is piecewise constant), so
// there is no finite-difference check: the gradients are checked against the backward's formulas.
#include <cmath>
#include <memory>
#include <utility>

#include "src/fp8_simulated_internal.hpp"
#include "tests/helpers.hpp"

using namespace octet;

namespace {

const DType kTypes[] = {DType::f16, DType::bf16, DType::f32};
const Code& e4m3() { static const Code c = Code::fp8_e4m3(); return c; }
const Code& e5m2() { static const Code c = Code::fp8_e5m2(); return c; }

// Reference fake quantization through the two-pass API, as bitsandbytes writes it.
Tensor ref_blockwise(const Tensor& x, const Code& code, int64_t bs) {
  Quantized q = quantize_blockwise(x.detach(), code, bs);
  return dequantize_blockwise(q.codes, q.state);  // x's dtype
}
Tensor ref_global(const Tensor& x, const Code& code) {
  Quantized q = quantize(x.detach().to(DType::f32), code);
  return dequantize(q.codes, q.state, DType::f32).to(x.dtype());
}

Tensor as2d(const Tensor& t) { return t.detach().reshape({-1, t.size(-1)}); }
Tensor tr(const Tensor& t) { return as2d(t).to(Device::cpu()).t(); }

double unit_of(DType t) {
  return t == DType::f16 ? std::ldexp(1.0, -11) : t == DType::bf16 ? std::ldexp(1.0, -8) : std::ldexp(1.0, -24);
}

// out (M, N) lies within GEMM rounding of a (M, K) @ b (K, N) [+ bias (N)] computed in f64.
void check_gemm(const Tensor& out, const Tensor& a, const Tensor& b, const Tensor& bias = {}) {
  const int64_t m = a.size(0), k = a.size(1), n = b.size(1);
  REQUIRE(b.size(0) == k);
  REQUIRE(out.numel() == m * n);
  const auto av = test::values(a), bv = test::values(b), ov = test::values(out);
  const auto cv = bias.defined() ? test::values(bias) : std::vector<double>(static_cast<size_t>(n), 0.0);
  const double unit = unit_of(out.dtype()), subnormal = out.dtype() == DType::f16 ? std::ldexp(1.0, -24) : 1e-38;
  int64_t bad = 0;
  double worst = 0;
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double ref = cv[static_cast<size_t>(j)], s = std::fabs(ref);
      for (int64_t p = 0; p < k; ++p) {
        const double x = av[static_cast<size_t>(i * k + p)] * bv[static_cast<size_t>(p * n + j)];
        ref += x;
        s += std::fabs(x);
      }
      const double bound = static_cast<double>(k + 3) * std::ldexp(1.0, -24) * s + unit * std::fabs(ref) + subnormal;
      const double err = std::fabs(ov[static_cast<size_t>(i * n + j)] - ref);
      if (!(err <= bound)) ++bad;  // NaN counts as bad
      worst = std::max(worst, err / bound);
    }
  }
  CAPTURE(worst);
  CHECK(bad == 0);
}

struct Case {
  Shape a;
  int64_t n;
};
const Case kCases[] = {{{46, 35}, 67}, {{3, 7, 33}, 65}, {{129, 200}, 31}, {{1, 1}, 1}, {{17, 64}, 64}};

// Forward and backward of matmul_fp8_mixed against docs/fp8-simulated.md for every dtype, 2-D/3-D A,
// rows that blocks straddle (K = 35 with bsz 64) and explicit block sizes.
void check_mixed(Device d) {
  manual_seed(1);
  for (DType t : kTypes) {
    for (const Case& c : kCases) {
      for (int64_t bsz : {int64_t{-1}, int64_t{32}}) {
        CAPTURE(dtype_name(t));
        CAPTURE(shape_str(c.a));
        CAPTURE(bsz);
        const int64_t k = c.a.back();
        Tensor A = randn(c.a, t, d).requires_grad_(), B = randn({k, c.n}, t, d).requires_grad_();
        const auto [pb, pb2] = fp8_block_sizes(A, B);
        const int64_t bs = bsz == -1 ? pb : bsz, bs2 = bsz == -1 ? pb2 : 2 * bsz;
        Tensor out = matmul_fp8_mixed(A, B, e4m3(), e5m2(), bsz, bsz == -1 ? -1 : 2 * bsz);
        Shape os = c.a;
        os.back() = c.n;
        REQUIRE(out.shape() == os);
        REQUIRE(out.dtype() == t);
        Tensor Aq = ref_blockwise(A, e4m3(), bs), Bq = ref_global(B, e4m3());
        CHECK(test::bitwise_equal(fake_quantize_blockwise(A.detach(), e4m3(), bs), Aq));
        CHECK(test::bitwise_equal(fake_quantize(B.detach(), e4m3()), Bq));
        if (A.numel() > 8) CHECK(!test::bitwise_equal(Aq, A.detach()));  // the code really quantizes
        check_gemm(out, as2d(Aq), Bq);
        if (d.is_cpu()) CHECK(test::bitwise_equal(out, matmul(Aq, Bq)));

        Tensor G = randn(os, t, d);
        backward(out, G);
        Tensor Gq = ref_blockwise(G, e5m2(), bs2);
        REQUIRE(A.grad().defined());
        REQUIRE(B.grad().defined());
        CHECK(A.grad().shape() == A.shape());
        check_gemm(A.grad(), as2d(Gq), tr(Bq));        // Gq Bq^T
        check_gemm(B.grad(), tr(A), as2d(G));          // A^T G, unquantized, summed over the batch
        if (d.is_cpu()) CHECK(test::bitwise_equal(B.grad(), matmul(tr(A), as2d(G))));
      }
    }
  }
}

// matmul_fp8_global: A, B, G quantized globally; grad_B from A^T quantized globally (= Aq^T).
void check_global(Device d) {
  manual_seed(2);
  for (DType t : kTypes) {
    for (const Case& c : kCases) {
      CAPTURE(dtype_name(t));
      CAPTURE(shape_str(c.a));
      const int64_t k = c.a.back();
      Tensor A = randn(c.a, t, d).requires_grad_(), B = randn({k, c.n}, t, d).requires_grad_();
      Tensor out = matmul_fp8_global(A, B, e4m3(), e5m2());
      REQUIRE(out.dtype() == t);
      Tensor Aq = ref_global(A, e4m3()), Bq = ref_global(B, e4m3());
      CHECK(test::bitwise_equal(fake_quantize(A.detach(), e4m3()), Aq));
      check_gemm(out, as2d(Aq), Bq);
      if (d.is_cpu()) CHECK(test::bitwise_equal(out, matmul(Aq, Bq)));

      Shape os = c.a;
      os.back() = c.n;
      Tensor G = randn(os, t, d);
      backward(out, G);
      Tensor Gq = ref_global(G, e5m2());
      Tensor Atq = ref_global(tr(A).to(d), e4m3());  // the global backward: A^T quantized on its own
      CHECK(test::bitwise_equal(Atq.to(Device::cpu()), tr(Aq)));  // = Aq^T, which the op reuses
      check_gemm(A.grad(), as2d(Gq), tr(Bq));
      check_gemm(B.grad(), Atq, as2d(Gq));
    }
  }
}

// Only the inputs that require grad get one; the other gets none.
void check_partial_grads(Device d) {
  manual_seed(3);
  for (bool global : {false, true}) {
    Tensor A = randn({9, 20}, DType::f32, d), B = randn({20, 11}, DType::f32, d).requires_grad_();
    Tensor out = global ? matmul_fp8_global(A, B, e4m3(), e5m2()) : matmul_fp8_mixed(A, B, e4m3(), e5m2());
    backward(sum(out));
    CHECK(!A.grad().defined());
    CHECK(B.grad().defined());
    Tensor A2 = randn({9, 20}, DType::f32, d).requires_grad_(), B2 = randn({20, 11}, DType::f32, d);
    Tensor out2 = global ? matmul_fp8_global(A2, B2, e4m3(), e5m2()) : matmul_fp8_mixed(A2, B2, e4m3(), e5m2());
    backward(sum(out2));
    CHECK(A2.grad().defined());
    CHECK(!B2.grad().defined());
    NoGradGuard ng;
    Tensor A3 = randn({9, 20}, DType::f32, d).requires_grad_();
    CHECK(!matmul_fp8_mixed(A3, B2, e4m3(), e5m2()).requires_grad());
  }
}

// A saved input written in place between forward and backward makes the backward throw
// (bitsandbytes would silently use the new values; docs/differences.md).
void check_inplace(Device d) {
  Tensor A = randn({4, 8}, DType::f32, d).requires_grad_(), B = randn({8, 3}, DType::f32, d).requires_grad_();
  Tensor out = matmul_fp8_mixed(A, B, e4m3(), e5m2());
  {
    NoGradGuard ng;
    A.fill_(1.0);
  }
  CHECK_THROWS_WITH_AS(backward(sum(out)), doctest::Contains("written in place after the forward"), Error);
}

// Empty inputs: empty results, zeros for K = 0 (bitsandbytes returned uninitialized memory),
// zero gradients of the inputs' shapes.
void check_empty(Device d) {
  const int64_t dims[][3] = {{0, 35, 67}, {5, 0, 7}, {5, 7, 0}, {0, 0, 0}};
  for (bool global : {false, true}) {
    for (const auto& s : dims) {
      CAPTURE(global);
      CAPTURE(s[0]); CAPTURE(s[1]); CAPTURE(s[2]);
      Tensor A = randn({s[0], s[1]}, DType::f16, d).requires_grad_();
      Tensor B = randn({s[1], s[2]}, DType::f16, d).requires_grad_();
      Tensor out = global ? matmul_fp8_global(A, B, e4m3(), e5m2()) : matmul_fp8_mixed(A, B, e4m3(), e5m2());
      REQUIRE(out.shape() == Shape{s[0], s[2]});
      CHECK(test::bitwise_equal(out, Tensor::zeros({s[0], s[2]}, DType::f16, d)));
      backward(out, test::poisoned({s[0], s[2]}, DType::f16, d));
      CHECK(test::bitwise_equal(A.grad(), Tensor::zeros(A.shape(), DType::f16, d)));
      CHECK(test::bitwise_equal(B.grad(), Tensor::zeros(B.shape(), DType::f16, d)));
    }
  }
  // 3-D A with an empty batch
  Tensor A = randn({0, 4, 8}, DType::f32, d), B = randn({8, 3}, DType::f32, d);
  CHECK(matmul_fp8_mixed(A, B, e4m3(), e5m2()).shape() == Shape{0, 4, 3});
}

void check_errors(Device d) {
  Tensor a = randn({4, 8}, DType::f32, d), b = randn({8, 3}, DType::f32, d);
  const Code fw = e4m3(), bw = e5m2();
  CHECK_THROWS_WITH_AS(matmul_fp8_mixed(a, b.to(DType::f16), fw, bw),
                       doctest::Contains("matmul_fp8_mixed: argument 'B': expected dtype f32, got dtype f16"), Error);
  CHECK_THROWS_WITH_AS(matmul_fp8_global(a.to(DType::f64), b.to(DType::f64), fw, bw),
                       doctest::Contains("matmul_fp8_global: argument 'A': expected dtype f32, f16 or bf16"), Error);
  CHECK_THROWS_WITH_AS(matmul_fp8_mixed(a, randn({7, 3}, DType::f32, d), fw, bw),
                       doctest::Contains("argument 'B': expected shape (8, N) to match A (4, 8), got shape (7, 3)"),
                       Error);
  CHECK_THROWS_WITH_AS(matmul_fp8_mixed(randn({8}, DType::f32, d), b, fw, bw),
                       doctest::Contains("argument 'A': expected 2 to 3 dimensions, got 1"), Error);
  CHECK_THROWS_WITH_AS(matmul_fp8_mixed(randn({1, 1, 4, 8}, DType::f32, d), b, fw, bw),
                       doctest::Contains("argument 'A': expected 2 to 3 dimensions, got 4"), Error);
  CHECK_THROWS_WITH_AS(matmul_fp8_global(a, randn({1, 8, 3}, DType::f32, d), fw, bw),
                       doctest::Contains("argument 'B': expected 2 dimensions"), Error);
  CHECK_THROWS_WITH_AS(matmul_fp8_mixed(a, b, fw, bw, 100), doctest::Contains("argument 'bsz': expected -1"), Error);
  CHECK_THROWS_WITH_AS(matmul_fp8_mixed(a, b, fw, bw, 16), doctest::Contains("power of two in [32, 4096], got 16"),
                       Error);
  CHECK_THROWS_WITH_AS(matmul_fp8_mixed(a, b, fw, bw, 64, 8192), doctest::Contains("argument 'bsz2'"), Error);
  CHECK_THROWS_WITH_AS(matmul_fp8_mixed(a, b, fw, bw, 64, 0), doctest::Contains("argument 'bsz2'"), Error);
  CHECK_THROWS_WITH_AS(matmul_fp8_mixed(Tensor(), b, fw, bw), doctest::Contains("argument 'A': expected a defined"),
                       Error);
  CHECK_THROWS_WITH_AS(matmul_fp8_global(a, Tensor(), fw, bw), doctest::Contains("argument 'B': expected a defined"),
                       Error);
  CHECK_THROWS_WITH_AS(fp8_block_sizes(a, randn({8}, DType::f32, d)),
                       doctest::Contains("fp8_block_sizes: argument 'B': expected 2 dimensions"), Error);
}

}  // namespace

TEST_CASE("fp8_block_sizes: bitsandbytes' get_block_sizes") {
  auto sizes = [](int64_t k, int64_t n) { return fp8_block_sizes(Tensor::empty({3, k}), Tensor::empty({k, n})); };
  CHECK(sizes(35, 67) == std::pair<int64_t, int64_t>{64, 128});  // test_matmul_fp8's shapes
  CHECK(sizes(1024, 2048) == std::pair<int64_t, int64_t>{1024, 2048});
  CHECK(sizes(2048, 1024) == std::pair<int64_t, int64_t>{2048, 1024});
  CHECK(sizes(64, 65) == std::pair<int64_t, int64_t>{64, 128});
  CHECK(sizes(257, 129) == std::pair<int64_t, int64_t>{512, 256});
  CHECK(sizes(4097, 100000) == std::pair<int64_t, int64_t>{4096, 4096});
  CHECK(sizes(2049, 1) == std::pair<int64_t, int64_t>{4096, 64});
  CHECK(sizes(0, 0) == std::pair<int64_t, int64_t>{64, 64});  // upstream: IndexError
  // out_f = B.size(0) when B.size(1) == in_f (B given as (N, K)).
  CHECK(fp8_block_sizes(Tensor::empty({2, 100}), Tensor::empty({300, 100})) == std::pair<int64_t, int64_t>{128, 512});
  // 3-D A: in_f is the last dimension.
  CHECK(fp8_block_sizes(Tensor::empty({2, 3, 600}), Tensor::empty({600, 5})) == std::pair<int64_t, int64_t>{1024, 64});
}

OCTET_TEST_BOTH("matmul_fp8_mixed forward and backward follow the documented formulas", check_mixed)
OCTET_TEST_BOTH("matmul_fp8_global forward and backward follow the documented formulas", check_global)
OCTET_TEST_BOTH("matmul_fp8: gradients only for inputs that require them", check_partial_grads)
OCTET_TEST_BOTH("matmul_fp8: a saved input written in place makes the backward throw", check_inplace)
OCTET_TEST_BOTH("matmul_fp8: empty inputs give empty or zero results and zero grads", check_empty)
OCTET_TEST_BOTH("matmul_fp8: argument errors", check_errors)

OCTET_CUDA_TEST("matmul_fp8: CPU and CUDA agree") {
  const Device g = Device::cuda(0);
  manual_seed(4);
  for (DType t : kTypes) {
    CAPTURE(dtype_name(t));
    for (bool global : {false, true}) {
      CAPTURE(global);
      Tensor A = randn({3, 41, 97}, t), B = randn({97, 75}, t), G = randn({3, 41, 75}, t);
      Tensor Ac = A.clone().requires_grad_(), Bc = B.clone().requires_grad_();
      Tensor Ag = A.to(g).requires_grad_(), Bg = B.to(g).requires_grad_();
      auto f = [&](const Tensor& a, const Tensor& b) {
        return global ? matmul_fp8_global(a, b, e4m3(), e5m2()) : matmul_fp8_mixed(a, b, e4m3(), e5m2());
      };
      Tensor oc = f(Ac, Bc), og = f(Ag, Bg);
      backward(oc, G);
      backward(og, G.to(g));
      // The fake-quantized operands are identical on both devices ...
      Tensor Aq = global ? fake_quantize(A, e4m3()) : fake_quantize_blockwise(A, e4m3(), 128);
      Tensor Aqg = global ? fake_quantize(A.to(g), e4m3()) : fake_quantize_blockwise(A.to(g), e4m3(), 128);
      CHECK(test::bitwise_equal(Aq, Aqg));
      CHECK(test::bitwise_equal(fake_quantize(B, e4m3()), fake_quantize(B.to(g), e4m3())));
      Tensor Gq = global ? fake_quantize(G, e5m2()) : fake_quantize_blockwise(G, e5m2(), 128);
      CHECK(test::bitwise_equal(Gq, global ? fake_quantize(G.to(g), e5m2())
                                           : fake_quantize_blockwise(G.to(g), e5m2(), 128)));
      // ... and the products are within GEMM rounding of them on both.
      Tensor Bq = fake_quantize(B, e4m3());
      for (const Tensor& o : {oc, og}) check_gemm(o, as2d(Aq), Bq);
      for (const Tensor& ga : {Ac.grad(), Ag.grad()}) check_gemm(ga, as2d(Gq), tr(Bq));
      for (const Tensor& gb : {Bc.grad(), Bg.grad()})
        check_gemm(gb, global ? tr(Aq) : tr(A), global ? as2d(Gq) : as2d(G));
    }
  }
  CHECK_THROWS_WITH_AS(matmul_fp8_mixed(randn({2, 3}, DType::f32, g), randn({3, 2}), e4m3(), e5m2()),
                       doctest::Contains("argument 'B': expected a tensor on cuda:0, got a tensor on cpu"), Error);
}

// ---- FP8 linear layers --------------------------------------------------------------------

namespace {

void check_linear(Device d) {
  manual_seed(5);
  for (bool global : {false, true}) {
    for (const Shape& xs : {Shape{7, 100}, Shape{2, 3, 100}}) {
      CAPTURE(global);
      CAPTURE(shape_str(xs));
      std::unique_ptr<nn::Linear> layer;
      if (global) layer = std::make_unique<nn::LinearFP8Global>(100, 130, true, d);
      else layer = std::make_unique<nn::LinearFP8Mixed>(100, 130, true, d);
      Tensor x = randn(xs, DType::f32, d).requires_grad_();
      Tensor y = layer->forward(x);
      Shape ys = xs;
      ys.back() = 130;
      REQUIRE(y.shape() == ys);
      Tensor Wq = ref_global(layer->weight, e4m3());
      Tensor xq = global ? ref_global(x, e4m3()) : ref_blockwise(x, e4m3(), 128);  // pick(100) = 128
      check_gemm(y, as2d(xq), tr(Wq), layer->bias.detach());
      // Same values as the public op on weight^T.
      Tensor yp = add_bias(global ? matmul_fp8_global(x.detach(), layer->weight.detach().t(), e4m3(), e5m2())
                                  : matmul_fp8_mixed(x.detach(), layer->weight.detach().t(), e4m3(), e5m2(), 128, 256),
                           layer->bias.detach());
      if (d.is_cpu()) CHECK(test::bitwise_equal(y, yp));

      Tensor G = randn(ys, DType::f32, d);
      backward(y, G);
      Tensor Gq = global ? ref_global(G, e5m2()) : ref_blockwise(G, e5m2(), 256);  // pick(130) = 256
      check_gemm(x.grad(), as2d(Gq), Wq);
      check_gemm(layer->weight.grad(), tr(global ? Gq : G), as2d(global ? xq : x));
      check_gemm(layer->bias.grad(), Tensor::ones({1, as2d(G).size(0)}), as2d(G));
    }
  }
}

}  // namespace

OCTET_TEST_BOTH("LinearFP8Mixed/LinearFP8Global forward and backward", check_linear)

TEST_CASE("LinearFP8Mixed/Global: block sizes and codes as bitsandbytes") {
  nn::LinearFP8Mixed a(1024, 2048), b(2048, 1024);
  CHECK(a.bsz == 1024);
  CHECK(a.bsz2 == 2048);
  CHECK(b.bsz == 2048);
  CHECK(b.bsz2 == 1024);
  nn::LinearFP8Global c(35, 67, false);
  CHECK(c.bsz == 64);
  CHECK(c.bsz2 == 128);
  CHECK(!c.bias.defined());
  CHECK(a.fw_code.values() == create_fp8_map(true, 4, 3, 8).to_vector<float>());
  CHECK(a.bw_code.values() == create_fp8_map(true, 5, 2, 8).to_vector<float>());
  CHECK(c.fw_code.values() == a.fw_code.values());
  Tensor x = randn({2, 1024}, DType::f16);
  CHECK_THROWS_WITH_AS(a.forward(x), doctest::Contains("LinearFP8Mixed::forward: argument 'weight': expected dtype f16"),
                       Error);
  CHECK_THROWS_WITH_AS(a.forward(randn({2, 1000})),
                       doctest::Contains("argument 'weight': expected shape (N, 1000) to match x (2, 1000)"), Error);
  CHECK_THROWS_WITH_AS(c.forward(randn({35})), doctest::Contains("LinearFP8Global::forward: argument 'x'"), Error);
}

// ---- golden outputs of bitsandbytes 0.49.2 ---------------------------------------------------

namespace {

// mm_mixed.f16.32x48x40: A (32, 48) @ B (48, 40) in f16, grad_out given. bitsandbytes' out,
// grad_A and grad_B lie within f16 GEMM rounding of the operands derived here, and so do ours.
void check_golden_mm(Device d) {
  auto gt = [&](const char* s) { return test::golden(std::string("mm_mixed.f16.32x48x40.") + s).detach().to(d); };
  Tensor A = gt("A").requires_grad_(), B = gt("B").requires_grad_(), G = gt("grad_out");
  REQUIRE(fp8_block_sizes(A, B) == std::pair<int64_t, int64_t>{64, 64});
  Tensor out = matmul_fp8_mixed(A, B, e4m3(), e5m2());
  backward(out, G);
  Tensor Aq = fake_quantize_blockwise(A.detach(), e4m3(), 64), Bq = fake_quantize(B.detach(), e4m3());
  Tensor Gq = fake_quantize_blockwise(G, e5m2(), 64);
  for (const Tensor& o : {out, gt("out")}) check_gemm(o, Aq, Bq);
  for (const Tensor& ga : {A.grad(), gt("grad_A")}) check_gemm(ga, Gq, tr(Bq));
  for (const Tensor& gb : {B.grad(), gt("grad_B")}) check_gemm(gb, tr(A), G);
}

// linear_fp8_mixed.b4.i64.o96: LinearFP8Mixed(64, 96) in f32 with bitsandbytes' weight and bias.
void check_golden_linear(Device d) {
  auto gt = [&](const char* s) { return test::golden(std::string("linear_fp8_mixed.b4.i64.o96.") + s).detach().to(d); };
  nn::LinearFP8Mixed layer(64, 96, true, d);
  const auto bsz = gt("bsz").to_vector<int64_t>();
  REQUIRE(bsz.size() == 2);
  CHECK(layer.bsz == bsz[0]);
  CHECK(layer.bsz2 == bsz[1]);
  {
    NoGradGuard ng;
    layer.weight.copy_(gt("weight"));
    layer.bias.copy_(gt("bias"));
  }
  Tensor x = gt("x").requires_grad_(), G = gt("grad_y");
  Tensor y = layer.forward(x);
  backward(y, G);
  Tensor xq = fake_quantize_blockwise(x.detach(), e4m3(), bsz[0]), Wq = fake_quantize(layer.weight.detach(), e4m3());
  Tensor Gq = fake_quantize_blockwise(G, e5m2(), bsz[1]);
  for (const Tensor& o : {y, gt("y")}) check_gemm(o, xq, tr(Wq), gt("bias"));
  for (const Tensor& gx : {x.grad(), gt("grad_x")}) check_gemm(gx, Gq, Wq);
  for (const Tensor& gw : {layer.weight.grad(), gt("grad_weight")}) check_gemm(gw, tr(G), x.detach());
  for (const Tensor& gb : {layer.bias.grad(), gt("grad_bias")}) check_gemm(gb, Tensor::ones({1, 4}, DType::f32, d), G);
}

}  // namespace

OCTET_TEST_BOTH("golden: matmul_fp8_mixed f16 32x48x40", check_golden_mm)
OCTET_TEST_BOTH("golden: LinearFP8Mixed(64, 96) f32", check_golden_linear)
