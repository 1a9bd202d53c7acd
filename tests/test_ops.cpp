// Core ops against f64 references on fresh random inputs, all float dtypes, odd and zero sizes;
// CPU against CUDA; determinism of reductions; matmul against an f64 CPU reference.
#include <cuda_runtime_api.h>

#include <cmath>

#include "src/gemm.hpp"
#include "tests/helpers.hpp"

using namespace octet;

namespace {

const DType kFloats[] = {DType::f32, DType::f64, DType::f16, DType::bf16};

double tol(DType t) {
  switch (t) {
    case DType::f64: return 1e-12;
    case DType::f32: return 1e-6;
    case DType::f16: return 1e-3;
    default: return 8e-3;
  }
}

void check_elementwise(Device d) {
  for (DType t : kFloats) {
    for (int64_t n : {0, 1, 33, 1000}) {
      CAPTURE(dtype_name(t));
      CAPTURE(n);
      Tensor a = randn({n}, DType::f64).to(t), b = randn({n}, DType::f64).to(t);
      auto av = test::values(a), bv = test::values(b);
      Tensor ad = a.to(d), bd = b.to(d);
      auto sum_v = test::values(add(ad, bd)), diff_v = test::values(sub(ad, bd)), prod_v = test::values(mul(ad, bd));
      auto abs_v = test::values(abs(ad)), sc_v = test::values(scale(ad, -2.5)), g_v = test::values(gelu(ad));
      for (size_t i = 0; i < av.size(); ++i) {
        const double x = av[i], y = bv[i];
        CHECK(sum_v[i] == doctest::Approx(x + y).epsilon(tol(t)).scale(1));
        CHECK(diff_v[i] == doctest::Approx(x - y).epsilon(tol(t)).scale(1));
        CHECK(prod_v[i] == doctest::Approx(x * y).epsilon(tol(t)).scale(1));
        CHECK(abs_v[i] == std::fabs(x));
        CHECK(sc_v[i] == doctest::Approx(-2.5 * x).epsilon(tol(t)));
        CHECK(g_v[i] == doctest::Approx(0.5 * x * (1 + std::erf(x / std::sqrt(2.0)))).epsilon(tol(t)).scale(1));
      }
      double s = 0, m = 0;
      for (double x : av) { s += x; m = std::max(m, std::fabs(x)); }
      CHECK(sum(ad).item() == doctest::Approx(s).epsilon(tol(t) * 10).scale(1));
      if (n > 0) CHECK(mean(ad).item() == doctest::Approx(s / n).epsilon(tol(t) * 10).scale(1));
      else CHECK(std::isnan(mean(ad).item()));
      CHECK(max_abs(ad).item() == static_cast<double>(static_cast<float>(m)));  // max_abs is f32
    }
  }
}

void check_reductions_special(Device d) {
  Tensor x = Tensor::from_vector(std::vector<float>{1.0f, -5.0f, NAN, 2.0f}, d);
  CHECK(std::isnan(max_abs(x).item()));
  Tensor y = Tensor::from_vector(std::vector<float>{1.0f, -INFINITY, 2.0f}, d);
  CHECK(std::isinf(max_abs(y).item()));
  CHECK(max_abs(Tensor::empty({0}, DType::f32, d)).item() == 0.0);
  // determinism: same input, same bits
  Tensor big = randn({3000001}, DType::f32, d);
  CHECK(test::bitwise_equal(sum(big), sum(big)));
  CHECK(test::bitwise_equal(mean(big), mean(big)));
}

void check_bias_and_rows(Device d) {
  for (DType t : kFloats) {
    Tensor x = randn({5, 7, 3}, DType::f64).to(t), b = randn({3}, DType::f64).to(t);
    auto xv = test::values(x), bv = test::values(b);
    auto out = test::values(add_bias(x.to(d), b.to(d)));
    auto rows = test::values(sum_rows(x.to(d)));
    for (size_t i = 0; i < xv.size(); ++i) CHECK(out[i] == doctest::Approx(xv[i] + bv[i % 3]).epsilon(tol(t)).scale(1));
    for (size_t c = 0; c < 3; ++c) {
      double s = 0;
      for (size_t r = 0; r < 35; ++r) s += xv[r * 3 + c];
      CHECK(rows[c] == doctest::Approx(s).epsilon(tol(t) * 10).scale(1));
    }
  }
}

// f64 CPU reference
std::vector<double> ref_matmul(const std::vector<double>& a, const std::vector<double>& b, int64_t m, int64_t k, int64_t n) {
  std::vector<double> c(static_cast<size_t>(m * n), 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t p = 0; p < k; ++p)
      for (int64_t j = 0; j < n; ++j) c[static_cast<size_t>(i * n + j)] += a[static_cast<size_t>(i * k + p)] * b[static_cast<size_t>(p * n + j)];
  return c;
}

void check_matmul(Device d) {
  const int64_t sizes[][3] = {{1, 1, 1}, {7, 16, 33}, {33, 7, 1}, {16, 33, 7}, {0, 5, 3}, {4, 0, 3}, {4, 5, 0}, {65, 129, 31}};
  for (DType t : kFloats) {
    for (const auto& s : sizes) {
      const int64_t m = s[0], k = s[1], n = s[2];
      CAPTURE(dtype_name(t));
      CAPTURE(m); CAPTURE(k); CAPTURE(n);
      Tensor a = randn({m, k}, DType::f64).to(t), b = randn({k, n}, DType::f64).to(t);
      Tensor c = matmul(a.to(d), b.to(d));
      REQUIRE(c.shape() == Shape{m, n});
      REQUIRE(c.dtype() == t);
      Tensor ref = Tensor::from_vector(ref_matmul(test::values(a), test::values(b), m, k, n), {m, n});
      // relative error bounded by the dtype's rounding of the output and K-term accumulation
      const double bound = t == DType::f64 ? 1e-13 : t == DType::f32 ? 1e-6 : t == DType::f16 ? 2e-3 : 1e-2;
      if (m * n > 0) CHECK(test::rel_error(c.to(DType::f64), ref) < bound);
      if (k == 0 && m * n > 0) CHECK(test::max_abs_diff(c.to(DType::f64), Tensor::zeros({m, n}, DType::f64)) == 0.0);
    }
  }
  // batched 3-D x 2-D
  Tensor a3 = randn({3, 5, 7}), b2 = randn({7, 4});
  Tensor c3 = matmul(a3.to(d), b2.to(d));
  CHECK(c3.shape() == Shape{3, 5, 4});
  Tensor c2 = matmul(a3.reshape({15, 7}).to(d), b2.to(d));
  CHECK(test::max_abs_diff(c3.reshape({15, 4}), c2) < 1e-6);
}

}  // namespace

OCTET_TEST_BOTH("elementwise ops and reductions against f64", check_elementwise)
OCTET_TEST_BOTH("reductions: NaN, Inf, empty, determinism", check_reductions_special)
OCTET_TEST_BOTH("add_bias and sum_rows", check_bias_and_rows)
namespace {
// Enough rows for the unrolled path of the CUDA column-sum kernel, and a partial column tile.
void check_sum_rows_large(Device d) {
  Tensor x = randn({1003, 77}, DType::f64);
  auto xv = test::values(x);
  auto got = test::values(sum_rows(x.to(DType::f32).to(d)));
  for (size_t c = 0; c < 77; ++c) {
    double s = 0;
    for (size_t r = 0; r < 1003; ++r) s += xv[r * 77 + c];
    CHECK(got[c] == doctest::Approx(s).epsilon(1e-5).scale(1));
  }
}
}  // namespace
OCTET_TEST_BOTH("sum_rows over many rows", check_sum_rows_large)
OCTET_TEST_BOTH("matmul against an f64 reference", check_matmul)

TEST_CASE("op argument errors") {
  Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({3, 2});
  CHECK_THROWS_WITH_AS(add(a, b), doctest::Contains("add: argument 'b': expected shape (2, 3)"), Error);
  CHECK_THROWS_WITH_AS(add(a, a.to(DType::f16)), doctest::Contains("dtype f32"), Error);
  CHECK_THROWS_WITH_AS(add(Tensor::zeros({2}, DType::i32), Tensor::zeros({2}, DType::i32)), doctest::Contains("f32, f64, f16 or bf16"), Error);
  CHECK_THROWS_WITH_AS(matmul(a, a), doctest::Contains("matmul: argument 'b'"), Error);
  CHECK_THROWS_WITH_AS(matmul(Tensor::zeros({2}), a), doctest::Contains("2 to 3 dimensions"), Error);
  CHECK_THROWS_WITH_AS(matmul(a, Tensor::zeros({3, 2, 1})), doctest::Contains("2 dimensions"), Error);
  CHECK_THROWS_WITH_AS(add_bias(a, Tensor::zeros({2})), doctest::Contains("shape (3,)"), Error);
  CHECK_THROWS_WITH_AS(linear(a, Tensor::zeros({4, 2})), doctest::Contains("linear: argument 'weight': expected shape (N, 3)"), Error);
  CHECK_THROWS_WITH_AS(linear(a, Tensor::zeros({4, 3}), Tensor::zeros({3})), doctest::Contains("linear: argument 'bias': expected shape (4,)"), Error);
  CHECK_THROWS_WITH_AS(linear(a, Tensor::zeros({4, 3}, DType::f64)), doctest::Contains("dtype f32"), Error);
  CHECK_THROWS_WITH_AS(linear(Tensor::zeros({3}), Tensor::zeros({4, 3})), doctest::Contains("2 to 3 dimensions"), Error);
  CHECK_THROWS_AS(sum(Tensor()), Error);
}

// Every op of ops.hpp, whole messages: "<op>: argument '<arg>': expected <what>, got <what>".
TEST_CASE("op argument errors: every op, whole messages") {
  const Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({3, 2}), u;
  const Tensor i = Tensor::zeros({2, 3}, DType::i32), a64 = Tensor::zeros({2, 3}, DType::f64);
  const std::string not_float = "expected dtype f32, f64, f16 or bf16, got dtype ";
  const std::string undefined = "expected a defined tensor, got an undefined (default-constructed) tensor";
  auto msg = [](const std::string& s) { return doctest::String(s.c_str()); };
  // the binary ops: a is checked first (dtype), then b against a (dtype, device, shape)
  for (auto* op : {&add, &sub, &mul}) {
    const std::string name = op == &add ? "add" : op == &sub ? "sub" : "mul";
    CAPTURE(name);
    CHECK_THROWS_WITH_AS((*op)(a, b), msg(name + ": argument 'b': expected shape (2, 3), got shape (3, 2)"), Error);
    CHECK_THROWS_WITH_AS((*op)(a, a64), msg(name + ": argument 'b': expected dtype f32, got dtype f64"), Error);
    CHECK_THROWS_WITH_AS((*op)(i, i), msg(name + ": argument 'a': " + not_float + "i32"), Error);
    CHECK_THROWS_WITH_AS((*op)(u, a), msg(name + ": argument 'a': " + undefined), Error);
    CHECK_THROWS_WITH_AS((*op)(a, u), msg(name + ": argument 'b': " + undefined), Error);
  }
  CHECK_THROWS_WITH_AS(mse_loss(a, b), "mse_loss: argument 'target': expected shape (2, 3), got shape (3, 2)", Error);
  CHECK_THROWS_WITH_AS(mse_loss(a, a64), "mse_loss: argument 'target': expected dtype f32, got dtype f64", Error);
  CHECK_THROWS_WITH_AS(mse_loss(i, i), msg("mse_loss: argument 'pred': " + not_float + "i32"), Error);
  CHECK_THROWS_WITH_AS(mse_loss(a, u), msg("mse_loss: argument 'target': " + undefined), Error);
  // the unary ops and reductions take one argument 'x'
  const Tensor u8 = Tensor::zeros({4}, DType::u8), e4 = Tensor::zeros({4}, DType::f8_e4m3);
  CHECK_THROWS_WITH_AS(scale(i, 2.0), msg("scale: argument 'x': " + not_float + "i32"), Error);
  CHECK_THROWS_WITH_AS(scale(u, 2.0), msg("scale: argument 'x': " + undefined), Error);
  CHECK_THROWS_WITH_AS(abs(u8), msg("abs: argument 'x': " + not_float + "u8"), Error);
  CHECK_THROWS_WITH_AS(abs(u), msg("abs: argument 'x': " + undefined), Error);
  CHECK_THROWS_WITH_AS(gelu(e4), msg("gelu: argument 'x': " + not_float + "f8_e4m3"), Error);
  CHECK_THROWS_WITH_AS(gelu(Tensor::zeros({2}, DType::i64)), msg("gelu: argument 'x': " + not_float + "i64"), Error);
  CHECK_THROWS_WITH_AS(gelu(u), msg("gelu: argument 'x': " + undefined), Error);
  CHECK_THROWS_WITH_AS(sum(u), msg("sum: argument 'x': " + undefined), Error);
  CHECK_THROWS_WITH_AS(sum(u8), msg("sum: argument 'x': " + not_float + "u8"), Error);
  CHECK_THROWS_WITH_AS(mean(Tensor::zeros({2}, DType::f8_e5m2)), msg("mean: argument 'x': " + not_float + "f8_e5m2"), Error);
  CHECK_THROWS_WITH_AS(mean(u), msg("mean: argument 'x': " + undefined), Error);
  CHECK_THROWS_WITH_AS(max_abs(i), msg("max_abs: argument 'x': " + not_float + "i32"), Error);
  CHECK_THROWS_WITH_AS(sum_rows(Tensor::zeros({})), "sum_rows: argument 'x': expected 1 to 8 dimensions, got 0 dimensions, shape ()", Error);
  CHECK_THROWS_WITH_AS(sum_rows(Tensor::zeros({1, 1, 1, 1, 1, 1, 1, 1, 1})), "sum_rows: argument 'x': expected 1 to 8 dimensions, got 9 dimensions, shape (1, 1, 1, 1, 1, 1, 1, 1, 1)", Error);
  CHECK_THROWS_WITH_AS(sum_rows(i), msg("sum_rows: argument 'x': " + not_float + "i32"), Error);
  CHECK_THROWS_WITH_AS(sum_rows(u), msg("sum_rows: argument 'x': " + undefined), Error);
  // bias, matmul and linear arguments beyond the ones of "op argument errors"
  CHECK_THROWS_WITH_AS(add_bias(a, Tensor::zeros({3}, DType::f64)), "add_bias: argument 'bias': expected dtype f32, got dtype f64", Error);
  CHECK_THROWS_WITH_AS(add_bias(Tensor::zeros({}), Tensor::zeros({1})), "add_bias: argument 'x': expected 1 to 8 dimensions, got 0 dimensions, shape ()", Error);
  CHECK_THROWS_WITH_AS(add_bias(a, u), msg("add_bias: argument 'bias': " + undefined), Error);
  CHECK_THROWS_WITH_AS(matmul(i, i), msg("matmul: argument 'a': " + not_float + "i32"), Error);
  CHECK_THROWS_WITH_AS(matmul(a, b.to(DType::f16)), "matmul: argument 'b': expected dtype f32, got dtype f16", Error);
  CHECK_THROWS_WITH_AS(matmul(a, a), "matmul: argument 'b': expected shape (3, N) to match a (2, 3), got shape (2, 3)", Error);
  CHECK_THROWS_WITH_AS(linear(a, Tensor::zeros({4, 3}), Tensor::zeros({4}, DType::bf16)), "linear: argument 'bias': expected dtype f32, got dtype bf16", Error);
  CHECK_THROWS_WITH_AS(linear(a, u), msg("linear: argument 'weight': " + undefined), Error);
  CHECK_THROWS_WITH_AS(axpy_(u, 1.0, a), msg("axpy_: argument 'y': " + undefined), Error);
  CHECK_THROWS_WITH_AS(axpy_(a, 1.0, u), msg("axpy_: argument 'x': " + undefined), Error);
}

OCTET_CUDA_TEST("op argument errors: operands on two devices") {
  const Tensor c = Tensor::zeros({2, 3}), g = Tensor::zeros({2, 3}, DType::f32, Device::cuda(0));
  const std::string on = "expected a tensor on cpu, got a tensor on cuda:0";
  auto msg = [](const std::string& s) { return doctest::String(s.c_str()); };
  CHECK_THROWS_WITH_AS(add(c, g), msg("add: argument 'b': " + on), Error);
  CHECK_THROWS_WITH_AS(sub(c, g), msg("sub: argument 'b': " + on), Error);
  CHECK_THROWS_WITH_AS(mul(c, g), msg("mul: argument 'b': " + on), Error);
  CHECK_THROWS_WITH_AS(mse_loss(c, g), msg("mse_loss: argument 'target': " + on), Error);
  CHECK_THROWS_WITH_AS(matmul(c, Tensor::zeros({3, 2}, DType::f32, Device::cuda(0))), msg("matmul: argument 'b': " + on), Error);
  CHECK_THROWS_WITH_AS(linear(c, Tensor::zeros({4, 3}, DType::f32, Device::cuda(0))), msg("linear: argument 'weight': " + on), Error);
  CHECK_THROWS_WITH_AS(linear(c, Tensor::zeros({4, 3}), Tensor::zeros({4}, DType::f32, Device::cuda(0))), msg("linear: argument 'bias': " + on), Error);
  CHECK_THROWS_WITH_AS(add_bias(c, Tensor::zeros({3}, DType::f32, Device::cuda(0))), msg("add_bias: argument 'bias': " + on), Error);
  CHECK_THROWS_WITH_AS(axpy_(c, 1.0, g), msg("axpy_: argument 'x': " + on), Error);
}

OCTET_CUDA_TEST("CPU and CUDA agree on the core ops") {
  const Device g = Device::cuda(0);
  Tensor a = randn({129, 65}), b = randn({65, 31}), c = randn({129, 65});
  CHECK(test::bitwise_equal(add(a, c), add(a.to(g), c.to(g))));
  CHECK(test::bitwise_equal(mul(a, c), mul(a.to(g), c.to(g))));
  CHECK(test::max_abs_diff(gelu(a), gelu(a.to(g))) < 1e-6);
  CHECK(test::rel_error(matmul(a.to(g), b.to(g)), matmul(a, b)) < 1e-6);
  CHECK(test::max_abs_diff(sum(a), sum(a.to(g))) < 1e-3);
  CHECK(max_abs(a).item() == max_abs(a.to(g)).item());
}

namespace {
// axpy_: y += alpha x in place with one rounding (fma in f32, f64 for f64).
void check_axpy(Device d) {
  for (DType t : kFloats) {
    for (int64_t n : {0, 1, 37, 70001}) {
      CAPTURE(dtype_name(t));
      CAPTURE(n);
      Tensor x = randn({n}, DType::f64).to(t), y0 = randn({n}, DType::f64).to(t);
      Tensor y = y0.to(d).clone();
      const void* before = y.data();
      axpy_(y, -0.3, x.to(d));
      CHECK(y.data() == before);
      const auto xv = test::values(x), yv = test::values(y0), got = test::values(y);
      for (size_t i = 0; i < xv.size(); ++i) {
        // the f32 (f64) fma of the stored values, rounded once to t
        const double exact = t == DType::f64 ? std::fma(-0.3, xv[i], yv[i])
                                             : static_cast<double>(std::fma(-0.3f, static_cast<float>(xv[i]), static_cast<float>(yv[i])));
        CHECK(got[i] == test::values(Tensor::from_vector(std::vector<double>{exact}).to(t))[0]);
      }
    }
  }
  Tensor y = Tensor::zeros({3}, DType::f32, d);
  CHECK_THROWS_WITH_AS(axpy_(y, 1.0, Tensor::zeros({4}, DType::f32, d)), doctest::Contains("axpy_: argument 'x': expected shape (3,)"), Error);
  CHECK_THROWS_WITH_AS(axpy_(y, 1.0, Tensor::zeros({3}, DType::f16, d)), doctest::Contains("axpy_: argument 'x': expected dtype f32"), Error);
  Tensor yi = Tensor::zeros({3}, DType::i32, d);
  CHECK_THROWS_WITH_AS(axpy_(yi, 1.0, yi), doctest::Contains("axpy_: argument 'y': expected dtype f32, f64, f16 or bf16"), Error);
  // views of one buffer: y itself is fine (y += 2y), a part overlap would read written elements
  Tensor buffer = Tensor::full({5}, 1.0, DType::f32, d);
  axpy_(buffer, 2.0, buffer);
  CHECK(buffer.to_vector<float>() == std::vector<float>(5, 3.0f));
  CHECK_THROWS_WITH_AS(axpy_(buffer.narrow(0, 1, 4), 1.0, buffer.narrow(0, 0, 4)),
                       doctest::Contains("axpy_: argument 'x': expected y itself or memory apart from y, got f32(4,)"), Error);
  axpy_(buffer.narrow(0, 0, 2), 1.0, buffer.narrow(0, 2, 2));  // adjacent, apart: fine
  CHECK(buffer.to_vector<float>() == std::vector<float>{6, 6, 3, 3, 3});
}
}  // namespace

OCTET_TEST_BOTH("axpy_ in place", check_axpy)

OCTET_CUDA_TEST("axpy_: CPU and CUDA give the same bits") {
  for (DType t : kFloats) {
    Tensor x = randn({4099}, DType::f64).to(t), y = randn({4099}, DType::f64).to(t);
    Tensor yc = y.clone(), yg = y.to(Device::cuda(0));
    axpy_(yc, 1.7, x);
    axpy_(yg, 1.7, x.to(Device::cuda(0)));
    CHECK(test::bitwise_equal(yc, yg));
  }
  CHECK_THROWS_WITH_AS(axpy_(Tensor::zeros({2}, DType::f32, Device::cuda(0)), 1.0, Tensor::zeros({2})),
                       doctest::Contains("axpy_: argument 'x': expected a tensor on cuda:0"), Error);
}

// --- initcheck probes (tools/gpu-check --full runs each alone under compute-sanitizer initcheck) ---
// initcheck reports "Uninitialized __global__ memory read" when some GEMM outputs are copied back.
// These two cases tell whether that is initcheck not seeing cuBLAS's stores (e.g. TMA bulk stores):
// each runs one cuBLAS GEMM (detail::gemm_into, as matmul and linear do) per dtype and copies the
// output back to the host. In A the output was never written before the GEMM; in B it was set by
// cudaMemsetAsync (0xFF bytes: NaN) first. Both check every value against the CPU, so cuBLAS wrote
// every element in both. Reports in A and none in B: initcheck misses cuBLAS's stores, and its
// reports on cuBLAS-written outputs are false positives. The outputs are allocated before anything
// else, so that A's are fresh memory, not a freed block the pool hands out again.
namespace {
void initcheck_probe(bool memset_first) {
  const Device g = Device::cuda(0);
  const int64_t m = 256, k = 512, n = 384;  // large enough for cuBLAS's tensor-core kernels
  const DType types[] = {DType::f32, DType::f16, DType::bf16};
  std::vector<Tensor> outs;
  for (DType t : types) outs.push_back(Tensor::empty({m, n}, t, g));
  for (size_t i = 0; i < outs.size(); ++i) {
    CAPTURE(dtype_name(types[i]));
    if (memset_first) REQUIRE(cudaMemsetAsync(outs[i].data(), 0xFF, outs[i].nbytes(), current_stream(0)) == cudaSuccess);
    const Tensor a = randn({m, k}, DType::f64).to(types[i]), b = randn({k, n}, DType::f64).to(types[i]);
    detail::gemm_into(a.to(g), b.to(g), outs[i], m, k, n);
    const Tensor ref = matmul(a.to(DType::f64), b.to(DType::f64));
    CHECK(test::rel_error(outs[i].to(Device::cpu()).to(DType::f64), ref) < (types[i] == DType::f32 ? 1e-5 : 1e-2));
  }
}
}  // namespace

OCTET_CUDA_TEST("initcheck probe A: cuBLAS GEMM into a fresh output") { initcheck_probe(false); }
OCTET_CUDA_TEST("initcheck probe B: cuBLAS GEMM into an output set by cudaMemsetAsync") { initcheck_probe(true); }
