// Tests of matmul_fp8_mixed's tensor-core forward (Fp8Product::tensor_cores, fp8_simulated.hpp) and of its
// operands (quant_internal::e4m3_operands), on CUDA; and that the CPU, which always runs the
// simulated product, gives its bits.
// - Operands: A8/B8 must be, byte for byte, e4m3(code[q] * 240) of the codes q that
//   quantize_blockwise / quantize give on the CPU (B8 transposed to (N, K) for a (K, N) B), with
//   the same absmax; b_scale = max |B| / 240^2; Bq equal to fake_quantize(B).
// - Products: within the tensor cores' accumulation error of the f64 product of the operands'
//   exact values (e4m3 / 240 * absmax): 2^-12 sum |a b| plus half an ulp of the output. The FP8
//   MMA keeps about 14 bits of its partial sums between promotions (2^-13.8 of sum |a b| was the
//   worst of 98304 outputs at K = 512 on an H200), so the bound has a margin of about 3.5.
// - Where the tensor-core forward does not apply (shapes, dtypes, codes, devices without it)
//   the result must be the simulated one, bit for bit; the backward is the simulated one always.
#include <cuda_runtime_api.h>

#include <cmath>

#include "src/cpu/quant.hpp"
#include "src/fp8_simulated_internal.hpp"
#include "tests/helpers.hpp"

using namespace octet;

namespace {

const Code& e4m3() { static const Code c = Code::fp8_e4m3(); return c; }
const Code& e5m2() { static const Code c = Code::fp8_e5m2(); return c; }
const Device kCuda = Device::cuda(0);

// e4m3(code[q] * 240) for the codes of a CPU quantization, as f8_e4m3 (rows, cols).
Tensor expected_e4m3(const Quantized& q, int64_t rows, int64_t cols) {
  const std::vector<float> code = q.state.code.to_vector<float>();
  const std::vector<uint8_t> idx = q.codes.to_vector<uint8_t>();
  std::vector<float> v(idx.size());
  for (size_t i = 0; i < idx.size(); ++i) v[i] = code[idx[i]] * 240.0f;
  return Tensor::from_vector(v).reshape({rows, cols}).to(DType::f8_e4m3);
}

// A with every kind of row: random, one with values down to the code's subnormals (index
// search at the bottom of the table, E4M3 rounding below 2^-6), a zero row, a row of one
// value, and rows scaled by `wide` and 1 / wide (products: a small wide, so nothing overflows f16).
Tensor test_matrix(int64_t rows, int64_t cols, DType t, float wide = 1e3f) {
  std::vector<float> v = randn({rows, cols}).to_vector<float>();
  for (int64_t r = 0; r < rows; ++r) {
    float* row = v.data() + r * cols;
    const int kind = static_cast<int>(r % 6);
    for (int64_t c = 0; c < cols; ++c) {
      if (kind == 1) row[c] = std::ldexp(row[c], -static_cast<int>(c % 24));
      if (kind == 2) row[c] = 0.0f;
      if (kind == 3) row[c] = 0.75f;
      if (kind == 4) row[c] *= wide;
      if (kind == 5) row[c] /= wide;
    }
  }
  return Tensor::from_vector(v).reshape({rows, cols}).to(t);
}

// f64 values of e4m3 / 240 * scale[i / block] (i: flat index; the exact operand the tensor
// cores multiply).
std::vector<double> tc_values(const Tensor& q8, const std::vector<float>& scale, int64_t block) {
  const std::vector<double> v = test::values(q8);
  std::vector<double> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = v[i] / 240.0 * scale[i / static_cast<size_t>(block)];
  return out;
}

// out (M, N) against a (M, K) and bt (N, K) given as f64 values.
void check_tc_product(const Tensor& out, const std::vector<double>& a, const std::vector<double>& bt, int64_t m,
                      int64_t k, int64_t n) {
  const std::vector<double> o = test::values(out);
  const double unit = out.dtype() == DType::f16 ? std::ldexp(1.0, -11) : std::ldexp(1.0, -8);
  const double subnormal = out.dtype() == DType::f16 ? std::ldexp(1.0, -24) : 1e-38;
  int64_t bad = 0;
  double worst = 0;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double ref = 0, s = 0;
      for (int64_t p = 0; p < k; ++p) {
        const double x = a[static_cast<size_t>(i * k + p)] * bt[static_cast<size_t>(j * k + p)];
        ref += x;
        s += std::fabs(x);
      }
      const double bound = std::ldexp(1.0, -12) * s + unit * std::fabs(ref) + subnormal;
      const double err = std::fabs(o[static_cast<size_t>(i * n + j)] - ref);
      if (!(err <= bound)) ++bad;
      worst = std::max(worst, err / bound);
    }
  CAPTURE(worst);
  CHECK(bad == 0);
}

// Compute capability 9.0, read without touching the library (doctest evaluates skip decorators
// while registering the cases, before main).
bool compute_capability_90() {
  if (!test::has_gpu()) return false;
  int major = 0, minor = 0;
  return cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0) == cudaSuccess &&
         cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0) == cudaSuccess && major == 9 &&
         minor == 0;
}

bool hopper() {
  return test::has_gpu() && detail::fp8_gemm_scaled_available(detail::Fp8GemmScales::outer, kCuda, 16, 16, 16,
                                                              DType::f8_e4m3, DType::f8_e4m3, DType::f16);
}

}  // namespace

// The operands, byte for byte: A blockwise with blocks = rows (outer scales) or rows of whole
// blocks (block128 scales), B global, plain and transposed.
OCTET_CUDA_TEST("e4m3_operands: codes, absmax and scales equal the CPU quantization") {
  manual_seed(11);
  for (DType t : {DType::f16, DType::bf16}) {
    for (bool bt : {false, true}) {
      for (auto [m, k, n, bs] : {std::tuple<int64_t, int64_t, int64_t, int64_t>{48, 64, 32, 64}, {96, 256, 80, 256},
                                 {32, 4096, 16, 4096}, {16, 128, 2048 + 16, 128}, {32, 512, 128, 128},
                                 {16, 8192, 256, 4096}}) {
        const bool block128 = bs < k;
        CAPTURE(dtype_name(t));
        CAPTURE(bt);
        CAPTURE(m);
        CAPTURE(k);
        CAPTURE(n);
        CAPTURE(bs);
        const Tensor A = test_matrix(m, k, t), B = test_matrix(bt ? n : k, bt ? k : n, t);
        Tensor A8, a_scale, B8, b_scale, Bq;
        quant_internal::e4m3_operands(A.to(kCuda), bs, B.to(kCuda), bt, e4m3(), block128, A8, a_scale, B8, b_scale,
                                      &Bq);
        REQUIRE(A8.dtype() == DType::f8_e4m3);
        REQUIRE(A8.shape() == Shape{m, k});
        REQUIRE(B8.shape() == Shape{n, k});
        const Quantized qa = quantize_blockwise(A, e4m3(), bs), qb = quantize(B.to(DType::f32), e4m3());
        CHECK(test::bitwise_equal(A8, expected_e4m3(qa, m, k)));
        if (!block128) {
          CHECK(test::bitwise_equal(a_scale, qa.state.absmax));
        } else {  // (K / 128, M): chunk c of row i has its block's absmax
          const std::vector<float> am = qa.state.absmax.to_vector<float>();
          std::vector<float> want(static_cast<size_t>(m * (k / 128)));
          for (int64_t c = 0; c < k / 128; ++c)
            for (int64_t i = 0; i < m; ++i)
              want[static_cast<size_t>(c * m + i)] = am[static_cast<size_t>((i * k + c * 128) / bs)];
          CHECK(test::bitwise_equal(a_scale, Tensor::from_vector(want).reshape({k / 128, m})));
        }
        const Tensor b8 = expected_e4m3(qb, B.size(0), B.size(1));
        CHECK(test::bitwise_equal(B8, bt ? b8 : b8.t()));
        const float bmax = qb.state.absmax.to_vector<float>()[0];
        const int64_t nb = block128 ? n / 128 * (k / 128) : n;
        CHECK(test::bitwise_equal(b_scale, Tensor::full({nb}, bmax / 57600.0f, DType::f32)));
        CHECK(test::bitwise_equal(Bq, fake_quantize(B, e4m3())));
        // The E4M3 operand is code * 240 (within the f32 rounding of the code, 2^-24) down to
        // 2^-6, and within half an E4M3 subnormal step (2^-10, plus that rounding) of it below.
        const std::vector<float> code = qa.state.code.to_vector<float>();
        const std::vector<double> a8 = test::values(A8);
        const std::vector<uint8_t> idx = qa.codes.to_vector<uint8_t>();
        int64_t off = 0;
        for (size_t i = 0; i < idx.size(); ++i) {
          const double want = static_cast<double>(code[idx[i]]) * 240.0;
          const double tol =
              std::ldexp(std::fabs(want), -23) + (std::fabs(want) >= std::ldexp(1.0, -6) ? 0.0 : std::ldexp(1.0, -10));
          if (!(std::fabs(a8[i] - want) <= tol))
            ++off;
        }
        CHECK(off == 0);
      }
    }
  }
}

// The product on tensor cores: 2-D and 3-D A, B as (K, N) and as a Linear's (N, K) weight.
// Skipped below compute capability 9.0, where cuBLASLt has no outer-vector FP8 GEMM; the fallback
// there is checked by "the simulated forward where it does not apply".
TEST_CASE("matmul_fp8_mixed tensor_cores: within FP8 accumulation of the exact code product [cuda]" *
          doctest::skip(!compute_capability_90())) {
  REQUIRE_MESSAGE(hopper(), "compute capability 9.0 but no outer-vector FP8 GEMM from cuBLASLt");
  manual_seed(12);
  for (DType t : {DType::f16, DType::bf16}) {
    // bsz -1 picks K (outer scales) up to 4096, 4096 at K = 8192 (block128); bsz 128 < K: block128.
    for (auto [batch, m, k, n, bsz] : {std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t>{1, 64, 64, 48, -1},
                                       {1, 96, 512, 112, -1}, {2, 48, 128, 64, -1}, {1, 32, 4096, 32, -1},
                                       {1, 64, 512, 128, 128}, {2, 16, 1024, 256, 256}, {1, 32, 8192, 128, -1}}) {
      CAPTURE(dtype_name(t));
      CAPTURE(batch);
      CAPTURE(m);
      CAPTURE(k);
      CAPTURE(n);
      CAPTURE(bsz);
      const Tensor A2 = test_matrix(batch * m, k, t, 4.0f), B = test_matrix(k, n, t, 4.0f);
      const Tensor A = batch == 1 ? A2 : A2.reshape({batch, m, k});
      const Tensor Ad = A.to(kCuda), Bd = B.to(kCuda);
      REQUIRE(fp8_tensor_core_forward(Ad, Bd, e4m3(), bsz));
      const Tensor out = matmul_fp8_mixed(Ad, Bd, e4m3(), e5m2(), bsz, -1, Fp8Product::tensor_cores);
      Shape os = A.shape();
      os.back() = n;
      REQUIRE(out.shape() == os);
      REQUIRE(out.dtype() == t);
      const int64_t bs = bsz == -1 ? fp8_block_sizes(A, B).first : bsz;
      const Quantized qa = quantize_blockwise(A2, e4m3(), bs), qb = quantize(B.to(DType::f32), e4m3());
      const auto a = tc_values(expected_e4m3(qa, batch * m, k), qa.state.absmax.to_vector<float>(), bs);
      const auto bt = tc_values(expected_e4m3(qb, k, n).t(), qb.state.absmax.to_vector<float>(), k * n);
      check_tc_product(out.reshape({batch * m, n}), a, bt, batch * m, k, n);
      // The layer's transposed weight takes the same path and gives the same bits.
      CHECK(detail::fp8_tensor_core_forward(Ad, Bd.t(), true, e4m3(), bsz));
      detail::Fp8Args p{.op = "test", .b_transposed = true, .bsz = bsz, .product = Fp8Product::tensor_cores};
      CHECK(test::bitwise_equal(detail::fp8_matmul(p, Ad, Bd.t(), e4m3(), e5m2()), out));
    }
  }
}

// The backward is the simulated one: gradients equal those of the simulated product bit for
// bit (grad_A uses the same Bq); so do a Linear layer's.
OCTET_CUDA_TEST("matmul_fp8_mixed tensor_cores: gradients equal the simulated product's") {
  manual_seed(13);
  for (DType t : {DType::f16, DType::bf16}) {
    CAPTURE(dtype_name(t));
    const Tensor A0 = test_matrix(64, 256, t).to(kCuda), B0 = test_matrix(256, 96, t).to(kCuda);
    const Tensor G = randn({64, 96}, t, kCuda);
    Tensor grads[2][2];
    for (int tc = 0; tc < 2; ++tc) {
      Tensor A = A0.clone().requires_grad_(), B = B0.clone().requires_grad_();
      Tensor out = matmul_fp8_mixed(A, B, e4m3(), e5m2(), -1, -1,
                                    tc ? Fp8Product::tensor_cores : Fp8Product::simulated);
      backward(out, G);
      grads[tc][0] = A.grad();
      grads[tc][1] = B.grad();
    }
    CHECK(test::bitwise_equal(grads[0][0], grads[1][0]));
    CHECK(test::bitwise_equal(grads[0][1], grads[1][1]));

    nn::LinearFP8Mixed sim(256, 128, true, kCuda, t), tcl(256, 128, true, kCuda, t);
    {
      NoGradGuard ng;
      tcl.weight.copy_(sim.weight);
      tcl.bias.copy_(sim.bias);
    }
    tcl.product = Fp8Product::tensor_cores;
    const Tensor x = test_matrix(32, 256, t).to(kCuda), gy = randn({32, 128}, t, kCuda);
    Tensor xs = x.clone().requires_grad_(), xt = x.clone().requires_grad_();
    Tensor ys = sim.forward(xs), yt = tcl.forward(xt);
    backward(ys, gy);
    backward(yt, gy);
    CHECK(test::bitwise_equal(xs.grad(), xt.grad()));
    CHECK(test::bitwise_equal(sim.weight.grad(), tcl.weight.grad()));
    CHECK(test::bitwise_equal(sim.bias.grad(), tcl.bias.grad()));
    if (hopper()) CHECK(!test::bitwise_equal(ys, yt));  // the forward did take the other path
  }
}

// Where the tensor-core forward does not apply, the simulated one runs: the same bits.
OCTET_CUDA_TEST("matmul_fp8_mixed tensor_cores: the simulated forward where it does not apply") {
  manual_seed(14);
  struct Case {
    DType t;
    int64_t m, k, n, bsz;
    bool other_code;
  };
  const Case cases[] = {
      {DType::f32, 64, 64, 64, -1, false},   // f32
      {DType::f16, 64, 48, 64, -1, false},   // bsz 64 != K = 48
      {DType::f16, 64, 128, 64, 64, false},  // bsz < K and below 128
      {DType::f16, 64, 256, 64, 128, false}, // bsz < K, N not a multiple of 128
      {DType::f16, 40, 64, 64, -1, false},   // M not a multiple of 16
      {DType::f16, 64, 64, 40, -1, false},   // N not a multiple of 16
      {DType::bf16, 64, 64, 64, -1, true},   // another code
      {DType::f16, 0, 64, 64, -1, false},    // empty
  };
  for (const Case& c : cases) {
    CAPTURE(dtype_name(c.t));
    CAPTURE(c.m);
    CAPTURE(c.k);
    CAPTURE(c.n);
    CAPTURE(c.bsz);
    const Code& fw = c.other_code ? e5m2() : e4m3();
    const Tensor A = randn({c.m, c.k}, c.t, kCuda), B = randn({c.k, c.n}, c.t, kCuda);
    CHECK(!fp8_tensor_core_forward(A, B, fw, c.bsz));
    CHECK(test::bitwise_equal(matmul_fp8_mixed(A, B, fw, e5m2(), c.bsz, -1, Fp8Product::tensor_cores),
                              matmul_fp8_mixed(A, B, fw, e5m2(), c.bsz, -1)));
  }
  if (!hopper()) {
    const Tensor A = randn({64, 64}, DType::f16, kCuda), B = randn({64, 64}, DType::f16, kCuda);
    CHECK(!fp8_tensor_core_forward(A, B, e4m3()));
    CHECK(test::bitwise_equal(matmul_fp8_mixed(A, B, e4m3(), e5m2(), -1, -1, Fp8Product::tensor_cores),
                              matmul_fp8_mixed(A, B, e4m3(), e5m2())));
  }
}

// The CPU never takes it: the simulated product, bit for bit; a product value outside the enum
// is an error.
TEST_CASE("matmul_fp8_mixed tensor_cores: the CPU runs the simulated forward [cpu]") {
  manual_seed(15);
  const Tensor A = randn({64, 64}, DType::f16), B = randn({64, 64}, DType::f16);
  CHECK(!fp8_tensor_core_forward(A, B, e4m3()));
  CHECK(test::bitwise_equal(matmul_fp8_mixed(A, B, e4m3(), e5m2(), -1, -1, Fp8Product::tensor_cores),
                            matmul_fp8_mixed(A, B, e4m3(), e5m2())));
  nn::LinearFP8Mixed layer(64, 32, true, Device::cpu(), DType::f16);
  layer.product = Fp8Product::tensor_cores;
  const Tensor y = layer.forward(A);
  layer.product = Fp8Product::simulated;
  CHECK(test::bitwise_equal(y, layer.forward(A)));
  CHECK_THROWS_WITH_AS(matmul_fp8_mixed(A, B, e4m3(), e5m2(), -1, -1, static_cast<Fp8Product>(7)),
                       doctest::Contains("matmul_fp8_mixed: argument 'product': expected Fp8Product::simulated or "
                                         "Fp8Product::tensor_cores"),
                       Error);
}
