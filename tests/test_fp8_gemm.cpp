// Tests of the fp8_gemm family, part one: FP8 casts exhaustive over all 256 codes of both formats
// and on random floats (saturation, NaN, subnormals, rounding midpoints), amax, transposed copies,
// column sums, dequantization, the current/delayed scaling recipes, matmul_fp8 against an f32 GEMM
// of the dequantized operands (bias, fast accumulation, odd and empty sizes), and bad input to the
// family and to nn::LinearFP8. CPU cases check exact bits against convert.hpp. nn::LinearFP8 is
// tested in test_fp8_gemm_linear.cpp, CUDA against the CPU reference in test_fp8_gemm_cuda.cpp.
#include <cfloat>
#include <cmath>
#include <cstring>

#include "octet/convert.hpp"
#include "tests/fp8_gemm_test_helpers.hpp"

using namespace octet;
using namespace octet::fp8_gemm_test;

namespace {

// Equal values, NaN equal to NaN.
bool same_floats(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (!(a[i] == b[i] || (std::isnan(a[i]) && std::isnan(b[i])))) return false;
  return true;
}

// ---- casts ------------------------------------------------------------------------------------

// Every code decodes to a value that casts back to itself; NaN codes cast to 0x7F; E5M2 +-Inf
// saturate to +-max (SATFINITE). Input in f32, f16 and bf16 (all FP8 values are exact there).
void check_all_codes(Device d) {
  for (DType fp8 : kFp8) {
    std::vector<float> vals(256);
    std::vector<uint8_t> expect(256);
    for (int i = 0; i < 256; ++i) {
      const auto b = static_cast<uint8_t>(i);
      vals[static_cast<size_t>(i)] = decode(fp8, b);
      const float v = vals[static_cast<size_t>(i)];
      expect[static_cast<size_t>(i)] = std::isnan(v) ? 0x7F : std::isinf(v) ? (v > 0 ? 0x7B : 0xFB) : b;
    }
    for (DType in : kHigh) {
      CAPTURE(dtype_name(fp8));
      CAPTURE(dtype_name(in));
      Tensor x = Tensor::from_vector(vals, d).to(in);
      Tensor amax = test::poisoned({1}, DType::f32, d);
      Fp8Cast q = cast_to_fp8(x, fp8, scalar(1.0f, d), amax, true);
      CHECK(codes(q.data) == expect);
      CHECK(codes(q.transposed) == expect);  // (256) viewed as (1, 256): the transpose is (256, 1)
      CHECK(q.transposed.shape() == Shape{256, 1});
      CHECK(std::isnan(amax.item()));  // the NaN codes
      Tensor back = dequantize_fp8(q.data, scalar(1.0f, d), DType::f32);
      auto bv = back.to_vector<float>();
      for (int i = 0; i < 256; ++i) {
        const float v = vals[static_cast<size_t>(i)];
        if (std::isnan(v)) CHECK(std::isnan(bv[static_cast<size_t>(i)]));
        else if (std::isinf(v)) CHECK(bv[static_cast<size_t>(i)] == std::copysign(fp8_max(fp8), v));
        else CHECK(std::memcmp(&bv[static_cast<size_t>(i)], &v, 4) == 0);  // -0 stays -0
      }
    }
  }
}
OCTET_TEST_BOTH("cast_to_fp8: all 256 codes round-trip", check_all_codes)

// Midpoints between neighbouring codes go to the even code, a hair either side to the nearer
// one; beyond max (up to FLT_MAX and Inf) saturates; below half the smallest subnormal gives 0.
void check_rounding_rule(Device d) {
  for (DType fp8 : kFp8) {
    CAPTURE(dtype_name(fp8));
    std::vector<float> in;
    std::vector<uint8_t> expect;
    const uint8_t max_code = fp8 == DType::f8_e4m3 ? 0x7E : 0x7B;
    for (uint8_t c = 0; c < max_code; ++c) {
      const float lo = decode(fp8, c), hi = decode(fp8, static_cast<uint8_t>(c + 1));
      const float mid = lo + (hi - lo) / 2;  // exact in f32
      for (float sign : {1.0f, -1.0f}) {
        const uint8_t s = sign < 0 ? 0x80 : 0;
        in.push_back(sign * mid);
        expect.push_back(static_cast<uint8_t>(((c % 2 == 0) ? c : c + 1) | s));
        in.push_back(sign * std::nextafter(mid, 0.0f));
        expect.push_back(static_cast<uint8_t>(c | s));
        in.push_back(sign * std::nextafter(mid, INFINITY));
        expect.push_back(static_cast<uint8_t>((c + 1) | s));
      }
    }
    for (float big : {fp8_max(fp8) * 1.0001f, fp8_max(fp8) * 1.2f, 1e30f, FLT_MAX, INFINITY}) {
      in.push_back(big);
      expect.push_back(max_code);
      in.push_back(-big);
      expect.push_back(static_cast<uint8_t>(max_code | 0x80));
    }
    const float tiny = decode(fp8, 1) / 2;  // half the smallest subnormal: ties to even (0)
    in.insert(in.end(), {tiny, -tiny, std::nextafter(tiny, 1.0f), NAN, -NAN});
    expect.insert(expect.end(), {0x00, 0x80, 0x01, 0x7F, 0x7F});
    Tensor q = cast_to_fp8(Tensor::from_vector(in, d), fp8, scalar(1.0f, d)).data;
    CHECK(codes(q) == expect);
  }
}
OCTET_TEST_BOTH("cast_to_fp8: round to nearest even, saturation, NaN", check_rounding_rule)

// Random inputs (with specials) and a scale: codes equal convert.hpp's of float(x) * scale, the
// transposed copy is the transpose, amax is the exact max |x|. Odd 2-D, 3-D and empty shapes.
void check_random_cast(Device d) {
  manual_seed(81);
  for (DType in : kHigh) {
    for (DType fp8 : kFp8) {
      for (const Shape& shape : {Shape{37, 53}, Shape{3, 5, 17}, Shape{1, 1}, Shape{64, 32}, Shape{0, 7}}) {
        CAPTURE(dtype_name(in));
        CAPTURE(dtype_name(fp8));
        CAPTURE(shape_str(shape));
        const float sc = fp8 == DType::f8_e4m3 ? 1.7f : 130.0f;
        std::vector<float> v = scale(randn(shape), 300.0).to(in).to_vector<float>();
        if (v.size() > 10) {
          v[1] = 1e-6f;
          v[2] = -0.0f;
          v[3] = 1e9f;
        }
        Tensor x = Tensor::from_vector(v, shape, Device::cpu()).to(in, d);
        const std::vector<float> xv = x.to_vector<float>();
        Tensor amax = test::poisoned({2}, DType::f32, d);
        Fp8Cast q = cast_to_fp8(x, fp8, scalar(sc, d), amax, true);
        CHECK(q.data.shape() == shape);
        const int64_t cols = shape.back(), rows = static_cast<int64_t>(xv.size()) / std::max<int64_t>(cols, 1);
        CHECK(q.transposed.shape() == Shape{cols, rows});
        const auto qc = codes(q.data), qt = codes(q.transposed);
        float m = 0;
        bool ok = true, ok_t = true;
        for (size_t i = 0; i < xv.size(); ++i) {
          ok = ok && qc[i] == encode(fp8, xv[i] * sc);
          const auto r = static_cast<int64_t>(i) / cols, c = static_cast<int64_t>(i) % cols;
          ok_t = ok_t && qt[static_cast<size_t>(c * rows + r)] == qc[i];
          m = std::max(m, std::fabs(xv[i]));
        }
        CHECK(ok);
        CHECK(ok_t);
        CHECK(amax.to_vector<float>()[0] == m);
      }
    }
  }
}
OCTET_TEST_BOTH("cast_to_fp8: random floats with a scale, transposed copy, amax", check_random_cast)

void check_amax_specials(Device d) {
  Tensor amax = test::poisoned({1}, DType::f32, d);
  cast_to_fp8(Tensor::from_vector(std::vector<float>{1, -INFINITY, 3}, d), DType::f8_e4m3, scalar(1, d), amax);
  CHECK(amax.item() == INFINITY);
  cast_to_fp8(Tensor::from_vector(std::vector<float>{1, -NAN, INFINITY}, d), DType::f8_e4m3, scalar(1, d), amax);
  uint32_t bits;
  float a = amax.to_vector<float>()[0];
  std::memcpy(&bits, &a, 4);
  CHECK(bits == 0x7FC00000u);  // canonical NaN, whatever the payload
  a = fp8_amax(Tensor::from_vector(std::vector<float>{1, -NAN, INFINITY}, d)).to_vector<float>()[0];
  std::memcpy(&bits, &a, 4);
  CHECK(bits == 0x7FC00000u);
  CHECK(fp8_amax(Tensor::empty({0, 3}, DType::bf16, d)).item() == 0.0);
  cast_to_fp8(Tensor::empty({0}, DType::f32, d), DType::f8_e5m2, scalar(1, d), amax);
  CHECK(amax.item() == 0.0);
  cast_to_fp8(Tensor::from_vector(std::vector<float>{-0.0f}, d), DType::f8_e5m2, scalar(1, d), amax);
  CHECK(amax.item() == 0.0);
  // Determinism on a large input (one atomic per block on CUDA): the same bits every run.
  manual_seed(5);
  Tensor big = randn({1 << 20}, DType::f32, d);
  Tensor a1 = Tensor::zeros({1}, DType::f32, d), a2 = Tensor::zeros({1}, DType::f32, d);
  cast_to_fp8(big, DType::f8_e4m3, scalar(1, d), a1);
  cast_to_fp8(big, DType::f8_e4m3, scalar(1, d), a2, true);
  CHECK(test::bitwise_equal(a1, a2));
  CHECK(a1.item() == max_abs(big).item());
  for (DType t : kHigh) CHECK(fp8_amax(big.to(t)).item() == max_abs(big.to(t)).item());
  CHECK(fp8_amax(big).shape() == Shape{});
}
OCTET_TEST_BOTH("cast_to_fp8: amax of Inf, NaN, empty; deterministic", check_amax_specials)

void check_dequantize(Device d) {
  manual_seed(82);
  for (DType fp8 : kFp8) {
    for (DType out : kHigh) {
      Tensor q = random_fp8({19, 23}, fp8, 40.0f, d);
      const float sinv = 0.37f;
      Tensor r = dequantize_fp8(q, scalar(sinv, d), out);
      CHECK(r.dtype() == out);
      std::vector<float> e = q.to_vector<float>();
      for (float& v : e) v *= sinv;
      CHECK(test::bitwise_equal(r.to(Device::cpu()), Tensor::from_vector(e, {19, 23}).to(out)));
    }
  }
}
OCTET_TEST_BOTH("dequantize_fp8: float(q) * scale_inv rounded once", check_dequantize)

// ---- scaling recipes --------------------------------------------------------------------------

float expected_scale(float amax, float fmax, int margin, float otherwise) {
  if (!(amax > 0 && std::isfinite(amax))) return otherwise;
  float s = fmax / amax;
  for (int i = 0; i < margin; ++i) s *= 0.5f;
  return s > FLT_MAX ? FLT_MAX : s < FLT_MIN ? FLT_MIN : s;
}

void check_current_scale(Device d) {
  for (DType fp8 : kFp8) {
    for (float amax : {1.5f, 448.0f, 3e-3f, 1e-40f, 0.0f, INFINITY, NAN, 3e38f}) {
      for (int margin : {0, 2}) {
        CAPTURE(amax);
        CAPTURE(margin);
        Fp8Scale s = fp8_current_scale(scalar(amax, d), fp8, margin);
        const float e = expected_scale(amax, fp8_max(fp8), margin, 1.0f);
        CHECK(s.scale.to_vector<float>()[0] == e);
        CHECK(s.scale_inv.to_vector<float>()[0] == 1.0f / e);
        CHECK(std::isfinite(s.scale.item()));
        CHECK(s.scale.item() > 0);
      }
    }
  }
  // current scaling maps the tensor's amax onto the format's max exactly (amax a power of two)
  Tensor x = Tensor::from_vector(std::vector<float>{0.25f, -2.0f, 1.0f}, d);
  Fp8Scale s = fp8_current_scale(max_abs(x), DType::f8_e4m3);
  CHECK(codes(cast_to_fp8(x, DType::f8_e4m3, s.scale).data)[1] == 0xFE);  // -448
}
OCTET_TEST_BOTH("fp8_current_scale: fp8_max / amax with guards", check_current_scale)

// A run of steps: cast (amax into slot 0), update; against a host model of the history.
void check_delayed_scale(Device d) {
  for (AmaxAlgo algo : {AmaxAlgo::max, AmaxAlgo::most_recent}) {
    DelayedScaling recipe{4, algo, 1};
    Tensor hist = Tensor::zeros({4}, DType::f32, d);
    Fp8Scale s = fp8_unit_scale(d);
    std::vector<float> model(4, 0.0f);
    float scale = 1.0f;
    const float amaxes[] = {2.0f, 0.5f, NAN, 8.0f, 0.25f, 0.0f, 1.0f, 3.0f};
    for (float a : amaxes) {
      CAPTURE(a);
      // update first (uses the previous casts), then cast with the new scale
      float am = algo == AmaxAlgo::max ? 0.0f : model[0];
      if (algo == AmaxAlgo::max)
        for (float h : model) am = h > am ? h : am;
      scale = expected_scale(am, kE4M3Max, 1, scale);
      for (size_t i = 3; i >= 1; --i) model[i] = model[i - 1];
      model[0] = 0.0f;
      s = fp8_delayed_scale(hist, s, DType::f8_e4m3, recipe);
      CHECK(s.scale.to_vector<float>()[0] == scale);
      CHECK(s.scale_inv.to_vector<float>()[0] == 1.0f / scale);
      CHECK(same_floats(hist.to_vector<float>(), model));
      cast_to_fp8(Tensor::from_vector(std::vector<float>{a, -a / 2}, d), DType::f8_e4m3, s.scale, hist);
      model[0] = a;
      CHECK(same_floats(hist.to_vector<float>(), model));
    }
  }
  // a long history (more than one block-chunk of the roll)
  DelayedScaling recipe{1000, AmaxAlgo::max, 0};
  std::vector<float> hv(1000);
  for (size_t i = 0; i < hv.size(); ++i) hv[i] = static_cast<float>(i % 97);
  Tensor hist = Tensor::from_vector(hv, d);
  Fp8Scale s = fp8_delayed_scale(hist, fp8_unit_scale(d), DType::f8_e5m2, recipe);
  CHECK(s.scale.item() == static_cast<double>(kE5M2Max / 96.0f));
  auto after = hist.to_vector<float>();
  CHECK(after[0] == 0.0f);
  bool rolled = true;
  for (size_t i = 1; i < hv.size(); ++i) rolled = rolled && after[i] == hv[i - 1];
  CHECK(rolled);
}
OCTET_TEST_BOTH("fp8_delayed_scale: history roll, max / most_recent, margin", check_delayed_scale)

// ---- matmul_fp8 -------------------------------------------------------------------------------

// Column sums fused into the cast (LinearFP8's bias gradient): against f64 sums of x rounded to
// x's dtype, within the f32 accumulation error of the CUDA partials (rows * 2^-23 * sum |x|); the
// FP8 outputs are the same bits as without the sums.
void check_column_sums(Device d) {
  manual_seed(84);
  for (DType in : kHigh) {
    for (const Shape& shape : {Shape{130, 72}, Shape{7, 1, 65}, Shape{200, 333}, Shape{1, 8}, Shape{0, 24}}) {
      for (bool transpose : {false, true}) {
        CAPTURE(dtype_name(in));
        CAPTURE(shape_str(shape));
        CAPTURE(transpose);
        Tensor x = scale(randn(shape), 3.0).to(in).to(d);
        Fp8Cast r = cast_to_fp8(x, DType::f8_e5m2, scalar(4.0f, d), {}, transpose, true);
        Fp8Cast plain = cast_to_fp8(x, DType::f8_e5m2, scalar(4.0f, d), {}, transpose);
        CHECK(test::bitwise_equal(r.data, plain.data));
        if (transpose) CHECK(test::bitwise_equal(r.transposed, plain.transposed));
        CHECK(r.transposed.defined() == transpose);
        const int64_t cols = shape.back(), rows = x.numel() / cols;
        REQUIRE(r.column_sums.shape() == Shape{cols});
        CHECK(r.column_sums.dtype() == in);
        const std::vector<double> xv = test::values(x), got = test::values(r.column_sums);
        size_t bad = 0;
        for (int64_t c = 0; c < cols; ++c) {
          double sum = 0, abs_sum = 0;
          for (int64_t row = 0; row < rows; ++row) {
            sum += xv[static_cast<size_t>(row * cols + c)];
            abs_sum += std::fabs(xv[static_cast<size_t>(row * cols + c)]);
          }
          const double tol = out_eps(in) * std::fabs(sum) + double(rows) * std::ldexp(1.0, -23) * abs_sum;
          if (!(std::fabs(got[static_cast<size_t>(c)] - sum) <= tol)) ++bad;
        }
        CHECK(bad == 0);
      }
    }
  }
}
OCTET_TEST_BOTH("cast_to_fp8: column sums fused into the cast", check_column_sums)

void check_matmul_fp8(Device d) {
  manual_seed(83);
  const GemmCase cases[] = {{32, 64, 48}, {37, 53, 29}, {1, 16, 16}, {16, 17, 32}, {5, 1, 3}};
  const DType pairs[][2] = {{DType::f8_e4m3, DType::f8_e4m3},
                            {DType::f8_e5m2, DType::f8_e4m3},
                            {DType::f8_e4m3, DType::f8_e5m2},
                            {DType::f8_e5m2, DType::f8_e5m2}};
  for (const GemmCase& c : cases) {
    for (const auto& pr : pairs) {
      for (DType out : kHigh) {
        for (bool with_bias : {false, true}) {
          for (bool fast : {false, true}) {
            CAPTURE(c.m);
            CAPTURE(c.k);
            CAPTURE(c.n);
            CAPTURE(dtype_name(pr[0]));
            CAPTURE(dtype_name(pr[1]));
            CAPTURE(dtype_name(out));
            CAPTURE(with_bias);
            CAPTURE(fast);
            Tensor a = random_fp8({c.m, c.k}, pr[0], 8.0f, d), b = random_fp8({c.n, c.k}, pr[1], 8.0f, d);
            Tensor sa = scalar(0.75f, d), sb = scalar(1.0f / 48, d);
            Tensor bias = with_bias ? randn({c.n}).to(out, d) : Tensor();
            Tensor y = matmul_fp8(a, b, sa, sb, out, bias, fast);
            CHECK(y.shape() == Shape{c.m, c.n});
            CHECK(y.dtype() == out);
            // CPU: f32 accumulation in another order. CUDA: tensor-core accumulation, whose
            // partial sums keep ~14 mantissa bits between promotions (all of K with fast_accum).
            const double acc = d.is_cpu() ? (c.k + 4) * std::ldexp(1.0, -24)
                                          : (fast ? (1.0 + c.k / 32.0) * std::ldexp(1.0, -13) : std::ldexp(1.0, -11));
            check_against_reference(y, a, b, sa, sb, bias, acc);
          }
        }
      }
    }
  }
}
OCTET_TEST_BOTH("matmul_fp8 vs f32 GEMM of the dequantized operands", check_matmul_fp8)

void check_matmul_fp8_shapes(Device d) {
  manual_seed(84);
  Tensor sa = scalar(0.5f, d), sb = scalar(2.0f, d);
  // 3-D a: leading dims kept
  Tensor a3 = random_fp8({2, 3, 32}, DType::f8_e4m3, 4.0f, d), b = random_fp8({16, 32}, DType::f8_e4m3, 4.0f, d);
  Tensor y3 = matmul_fp8(a3, b, sa, sb, DType::f32);
  CHECK(y3.shape() == Shape{2, 3, 16});
  check_against_reference(y3.reshape({6, 16}), a3, b, sa, sb, {}, d.is_cpu() ? 1e-6 : std::ldexp(1.0, -10));
  // empty M, N and K = 0 (zeros plus bias)
  CHECK(matmul_fp8(Tensor::empty({0, 32}, DType::f8_e4m3, d), b, sa, sb, DType::bf16).shape() == Shape{0, 16});
  CHECK(matmul_fp8(a3, Tensor::empty({0, 32}, DType::f8_e4m3, d), sa, sb, DType::f32).shape() == Shape{2, 3, 0});
  Tensor bias = randn({16}).to(DType::bf16, d);
  Tensor z = matmul_fp8(Tensor::empty({5, 0}, DType::f8_e4m3, d), Tensor::empty({16, 0}, DType::f8_e5m2, d), sa, sb,
                        DType::bf16, bias);
  CHECK(z.shape() == Shape{5, 16});
  auto zv = test::values(z), bv = test::values(bias);
  bool ok = true;
  for (size_t i = 0; i < zv.size(); ++i) ok = ok && zv[i] == bv[i % 16];
  CHECK(ok);
}
OCTET_TEST_BOTH("matmul_fp8: 3-D a, empty sizes, K = 0", check_matmul_fp8_shapes)

TEST_CASE("matmul_fp8: CPU emulation is exact for exactly representable sums") {
  // Products of FP8 values are exact in f32; small integer sums too: the result is exact.
  std::vector<uint8_t> ac(16 * 32), bc(8 * 32);
  for (size_t i = 0; i < ac.size(); ++i) ac[i] = float_to_e4m3_bits(static_cast<float>(static_cast<int>(i % 7) - 3));
  for (size_t i = 0; i < bc.size(); ++i) bc[i] = float_to_e4m3_bits(static_cast<float>(static_cast<int>(i % 5) - 2));
  Tensor a = from_codes(ac, DType::f8_e4m3, {16, 32}, Device::cpu());
  Tensor b = from_codes(bc, DType::f8_e4m3, {8, 32}, Device::cpu());
  Tensor y = matmul_fp8(a, b, scalar(2.0f, Device::cpu()), scalar(0.5f, Device::cpu()), DType::f32);
  Tensor ref = matmul(a.to(DType::f32), b.to(DType::f32).t());
  CHECK(test::bitwise_equal(y, ref));
  CHECK(matmul_fp8_path(a, b, DType::f32) == Fp8GemmPath::cpu_emulation);
}

// ---- bad input --------------------------------------------------------------------------------

TEST_CASE("fp8_gemm: bad input is rejected with the op, argument and what was expected") {
  const Device c = Device::cpu();
  Tensor x = randn({4, 16}), one = scalar(1.0f, c);
  Tensor q = cast_to_fp8(x, DType::f8_e4m3, one).data;
  using doctest::Contains;
  CHECK_THROWS_WITH_AS(fp8_max(DType::f32), Contains("fp8_max: argument 'fp8'"), Error);
  CHECK_THROWS_WITH_AS(cast_to_fp8(x.to(DType::f64), DType::f8_e4m3, one), Contains("cast_to_fp8: argument 'x'"),
                       Error);
  CHECK_THROWS_WITH_AS(cast_to_fp8(q, DType::f8_e4m3, one), Contains("cast_to_fp8: argument 'x'"), Error);
  CHECK_THROWS_WITH_AS(cast_to_fp8(x, DType::bf16, one), Contains("cast_to_fp8: argument 'fp8'"), Error);
  CHECK_THROWS_WITH_AS(cast_to_fp8(x, DType::f8_e4m3, Tensor()), Contains("cast_to_fp8: argument 'scale'"), Error);
  CHECK_THROWS_WITH_AS(cast_to_fp8(x, DType::f8_e4m3, one.to(DType::f64)), Contains("argument 'scale'"), Error);
  CHECK_THROWS_WITH_AS(cast_to_fp8(x, DType::f8_e4m3, Tensor::ones({2})), Contains("argument 'scale'"), Error);
  CHECK_THROWS_WITH_AS(cast_to_fp8(x, DType::f8_e4m3, one, Tensor::empty({0})), Contains("argument 'amax'"), Error);
  CHECK_THROWS_WITH_AS(cast_to_fp8(x, DType::f8_e4m3, one, Tensor::zeros({1}, DType::f64)), Contains("argument 'amax'"),
                       Error);
  CHECK_THROWS_WITH_AS(cast_to_fp8(scalar(1, c), DType::f8_e4m3, one, {}, true), Contains("argument 'x'"), Error);
  CHECK_THROWS_WITH_AS(cast_to_fp8(scalar(1, c), DType::f8_e4m3, one, {}, false, true),
                       Contains("cast_to_fp8: argument 'x'"), Error);
  Tensor xg = randn({3, 3}).requires_grad_();
  CHECK_THROWS_WITH_AS(cast_to_fp8(xg, DType::f8_e4m3, one), Contains("cast_to_fp8"), Error);

  CHECK_THROWS_WITH_AS(fp8_amax(q), Contains("fp8_amax: argument 'x'"), Error);
  CHECK_THROWS_WITH_AS(fp8_amax(xg), Contains("fp8_amax"), Error);
  CHECK_THROWS_WITH_AS(dequantize_fp8(x, one), Contains("dequantize_fp8: argument 'q'"), Error);
  CHECK_THROWS_WITH_AS(dequantize_fp8(q, one, DType::u8), Contains("dequantize_fp8: argument 'out'"), Error);
  CHECK_THROWS_WITH_AS(dequantize_fp8(q, Tensor::ones({3})), Contains("argument 'scale_inv'"), Error);

  CHECK_THROWS_WITH_AS(fp8_current_scale(Tensor(), DType::f8_e4m3), Contains("fp8_current_scale: argument 'amax'"),
                       Error);
  CHECK_THROWS_WITH_AS(fp8_current_scale(Tensor::ones({2}), DType::f8_e4m3), Contains("argument 'amax'"), Error);
  CHECK_THROWS_WITH_AS(fp8_current_scale(one, DType::f16), Contains("fp8_current_scale: argument 'fp8'"), Error);
  CHECK_THROWS_WITH_AS(fp8_current_scale(one, DType::f8_e4m3, -1), Contains("argument 'margin'"), Error);
  DelayedScaling r{8, AmaxAlgo::max, 0};
  CHECK_THROWS_WITH_AS(fp8_delayed_scale(Tensor::zeros({7}), fp8_unit_scale(c), DType::f8_e4m3, r),
                       Contains("fp8_delayed_scale: argument 'history'"), Error);
  CHECK_THROWS_WITH_AS(fp8_delayed_scale(Tensor::zeros({8}, DType::f64), fp8_unit_scale(c), DType::f8_e4m3, r),
                       Contains("argument 'history'"), Error);
  CHECK_THROWS_WITH_AS(fp8_delayed_scale(Tensor::zeros({0}), fp8_unit_scale(c), DType::f8_e4m3, {0, AmaxAlgo::max, 0}),
                       Contains("argument 'recipe.history_len'"), Error);
  CHECK_THROWS_WITH_AS(fp8_delayed_scale(Tensor::zeros({8}), Fp8Scale{}, DType::f8_e4m3, r),
                       Contains("argument 'previous.scale'"), Error);
  CHECK_THROWS_WITH_AS(fp8_delayed_scale(Tensor::zeros({8}), fp8_unit_scale(c), DType::f8_e4m3, {8, AmaxAlgo::max, 99}),
                       Contains("argument 'recipe.margin'"), Error);

  Tensor b = cast_to_fp8(randn({8, 16}), DType::f8_e4m3, one).data;
  CHECK_THROWS_WITH_AS(matmul_fp8(x, b, one, one, DType::f32), Contains("matmul_fp8: argument 'a'"), Error);
  CHECK_THROWS_WITH_AS(matmul_fp8(q, x, one, one, DType::f32), Contains("matmul_fp8: argument 'b'"), Error);
  CHECK_THROWS_WITH_AS(matmul_fp8(q.reshape({64}), b, one, one, DType::f32), Contains("argument 'a'"), Error);
  CHECK_THROWS_WITH_AS(matmul_fp8(q, b.reshape({16, 8}), one, one, DType::f32),
                       Contains("argument 'b': expected shape (N, 16)"),
                       Error);
  CHECK_THROWS_WITH_AS(matmul_fp8(q, b.reshape({1, 8, 16}), one, one, DType::f32), Contains("argument 'b'"), Error);
  CHECK_THROWS_WITH_AS(matmul_fp8(q, b, Tensor::ones({2}), one, DType::f32), Contains("argument 'scale_a'"), Error);
  CHECK_THROWS_WITH_AS(matmul_fp8(q, b, one, Tensor(), DType::f32), Contains("argument 'scale_b'"), Error);
  CHECK_THROWS_WITH_AS(matmul_fp8(q, b, one, one.to(DType::bf16), DType::f32), Contains("argument 'scale_b'"), Error);
  CHECK_THROWS_WITH_AS(matmul_fp8(q, b, one, one, DType::f8_e4m3), Contains("argument 'out_dtype'"), Error);
  CHECK_THROWS_WITH_AS(matmul_fp8(q, b, one, one, DType::f64), Contains("argument 'out_dtype'"), Error);
  CHECK_THROWS_WITH_AS(matmul_fp8(q, b, one, one, DType::bf16, Tensor::zeros({8})), Contains("argument 'bias'"), Error);
  CHECK_THROWS_WITH_AS(matmul_fp8(q, b, one, one, DType::f32, Tensor::zeros({9})), Contains("argument 'bias'"), Error);
  CHECK_THROWS_WITH_AS(matmul_fp8(q, b, one, one, DType::f32, Tensor::zeros({8}).requires_grad_()),
                       Contains("matmul_fp8"), Error);
  CHECK_THROWS_WITH_AS(matmul_fp8_path(q, b, DType::u8), Contains("matmul_fp8_path: argument 'out_dtype'"), Error);

  nn::LinearFP8 lin(16, 8);
  CHECK_THROWS_WITH_AS(lin.forward(Tensor()), Contains("LinearFP8: argument 'x'"), Error);
  CHECK_THROWS_WITH_AS(lin.forward(randn({4, 15})), Contains("LinearFP8: argument 'x': expected shape (..., 16)"),
                       Error);
  CHECK_THROWS_WITH_AS(lin.forward(randn({4, 16}).to(DType::bf16)), Contains("LinearFP8: argument 'x'"), Error);
  CHECK_THROWS_WITH_AS(lin.forward(scalar(1, c)), Contains("LinearFP8: argument 'x'"), Error);
  CHECK_THROWS_WITH_AS(nn::LinearFP8(-1, 4), Contains("argument 'in_features'"), Error);
  CHECK_THROWS_WITH_AS(nn::LinearFP8(4, -2), Contains("argument 'out_features'"), Error);
  CHECK_THROWS_WITH_AS(nn::LinearFP8(4, 4, true, c, DType::f64), Contains("LinearFP8: argument 'dtype'"), Error);
}

}  // namespace
