// Tests of the fp8_gemm family on CUDA against the CPU reference (part three of the suite; every
// case needs a GPU): casts, dequantize and scale updates bit for bit, amax hints of elementwise ops,
// matmul_fp8 through cuBLASLt (paths, autotune) and nn::LinearFP8 with its crossover.
#include <cmath>
#include <vector>

#include "src/amax_hint.hpp"
#include "tests/fp8_gemm_test_helpers.hpp"

using namespace octet;
using namespace octet::fp8_gemm_test;

namespace {

// ---- CUDA against the CPU reference -----------------------------------------------------------

OCTET_CUDA_TEST("cast_to_fp8, dequantize and scale updates: CUDA bits equal CPU bits") {
  manual_seed(88);
  const Device g = Device::cuda(0), c = Device::cpu();
  for (DType in : kHigh) {
    for (DType fp8 : kFp8) {
      // odd shapes (element path), and shapes whose dims are multiples of 8 (vector path, partial tiles)
      for (const Shape& shape :
           {Shape{1000, 333}, Shape{4097}, Shape{7, 1, 65}, Shape{256, 320}, Shape{72, 200}, Shape{2, 40, 136}}) {
        Tensor x = scale(randn(shape), 90.0).to(in);
        Tensor ac = Tensor::zeros({1}, DType::f32, c), ag = test::poisoned({1}, DType::f32, g);
        Fp8Cast qc = cast_to_fp8(x, fp8, scalar(2.5f, c), ac, true);
        Fp8Cast qg = cast_to_fp8(x.to(g), fp8, scalar(2.5f, g), ag, true);
        CHECK(test::bitwise_equal(qg.data.to(c), qc.data));
        CHECK(test::bitwise_equal(qg.transposed.to(c), qc.transposed));
        CHECK(test::bitwise_equal(ag.to(c), ac));
        Fp8Cast vg = cast_to_fp8(x.to(g), fp8, scalar(2.5f, g));  // vectorized, no transpose
        CHECK(test::bitwise_equal(vg.data.to(c), qc.data));
        CHECK(test::bitwise_equal(fp8_amax(x.to(g)).to(c), fp8_amax(x)));
        for (DType out : kHigh)
          CHECK(test::bitwise_equal(dequantize_fp8(qg.data, scalar(0.3f, g), out).to(c),
                                    dequantize_fp8(qc.data, scalar(0.3f, c), out)));
      }
    }
  }
  DelayedScaling r{300, AmaxAlgo::max, 1};
  Tensor hc = scale(rand({300}), 50.0), hg = hc.to(g);
  Fp8Scale sc = fp8_unit_scale(c), sg = fp8_unit_scale(g);
  for (int i = 0; i < 3; ++i) {
    sc = fp8_delayed_scale(hc, sc, DType::f8_e5m2, r);
    sg = fp8_delayed_scale(hg, sg, DType::f8_e5m2, r);
    CHECK(test::bitwise_equal(sg.scale.to(c), sc.scale));
    CHECK(test::bitwise_equal(sg.scale_inv.to(c), sc.scale_inv));
    CHECK(test::bitwise_equal(hg.to(c), hc));
  }
}

// CUDA elementwise ops keep the amax of their output (src/amax_hint.hpp) and fp8_amax reduces it
// instead of reading the data: it must give the bits of a pass over the same data (a clone has no
// hint), and an in-place write must retire it.
OCTET_CUDA_TEST("fp8_amax: amax hints of CUDA elementwise ops equal a pass over the data") {
  manual_seed(91);
  const Device g = Device::cuda(0);
  const int64_t n = detail::kAmaxHintMinNumel + 13;  // a tail after the 16-byte vectors
  int blocks = 0;
  auto check_hinted = [&](const Tensor& out) {
    CAPTURE(out.str());
    CHECK(detail::amax_hint(out, &blocks) != nullptr);
    CHECK(detail::amax_hint(out.clone(), &blocks) == nullptr);
    CHECK(test::bitwise_equal(fp8_amax(out), fp8_amax(out.clone())));
  };
  for (DType t : kHigh) {
    CAPTURE(dtype_name(t));
    Tensor x = scale(randn({n}, DType::f32, g), 3.0).to(t), y = randn({n}, DType::f32, g).to(t);
    for (const Tensor& out : {gelu(x), add(x, y), sub(x, y), mul(x, y), scale(x, -2.0), abs(x)}) check_hinted(out);
    check_hinted(gelu(x).reshape({n}));
    Tensor xl = x.detach().requires_grad_();
    backward(gelu(xl), y);  // gelu's gradient: one binary op
    check_hinted(xl.grad());
    Tensor w = y.clone();
    axpy_(w, -0.5, x);
    check_hinted(w);
    w.fill_(7.0);  // an in-place write bumps the version: the hint is stale
    CHECK(detail::amax_hint(w, &blocks) == nullptr);
    CHECK(fp8_amax(w).item() == 7.0);
    // NaN and Inf in the output: the same canonical bits as the pass
    std::vector<float> v(static_cast<size_t>(n), 0.5f);
    v[n - 1] = NAN;
    v[7] = -INFINITY;
    Tensor special = Tensor::from_vector(v, g).reshape({n}).to(t);
    check_hinted(scale(special, 1.0));
    v[n - 1] = 0.5f;
    check_hinted(scale(Tensor::from_vector(v, g).to(t), 2.0));
  }
  Tensor small = gelu(randn({1000}, DType::bf16, g));  // below kAmaxHintMinNumel: no hint, the pass
  CHECK(detail::amax_hint(small, &blocks) == nullptr);
  CHECK(fp8_amax(small).item() == max_abs(small).item());
}

OCTET_CUDA_TEST("matmul_fp8: cuBLASLt agrees with the CPU emulation; paths") {
  manual_seed(89);
  const Device g = Device::cuda(0), c = Device::cpu();
  const GemmCase cases[] = {{256, 512, 384}, {130, 200, 70}, {16, 4096, 48}};
  for (const GemmCase& cs : cases) {
    for (DType out : kHigh) {
      for (bool fast : {false, true}) {
        CAPTURE(cs.m);
        CAPTURE(dtype_name(out));
        CAPTURE(fast);
        Tensor a = random_fp8({cs.m, cs.k}, DType::f8_e4m3, 16.0f, c);
        Tensor b = random_fp8({cs.n, cs.k}, DType::f8_e5m2, 300.0f, c);
        Tensor bias = randn({cs.n}).to(out);
        Tensor yc = matmul_fp8(a, b, scalar(0.01f, c), scalar(0.02f, c), out, bias, fast);
        Tensor yg = matmul_fp8(a.to(g), b.to(g), scalar(0.01f, g), scalar(0.02f, g), out, bias.to(g), fast);
        const double acc = fast ? (1.0 + cs.k / 32.0) * std::ldexp(1.0, -13) : std::ldexp(1.0, -11);
        check_against_reference(yg, a, b, scalar(0.01f, c), scalar(0.02f, c), bias, acc);
        CHECK(test::rel_error(yg.to(c), yc) < (fast ? 1e-2 : 1e-3));
      }
    }
  }
  if (fp8_tensor_cores(0)) {
    Tensor a = random_fp8({32, 64}, DType::f8_e4m3, 4.0f, g), b = random_fp8({48, 64}, DType::f8_e4m3, 4.0f, g);
    CHECK(matmul_fp8_path(a, b, DType::bf16) == Fp8GemmPath::cublaslt);
    Tensor odd = random_fp8({30, 64}, DType::f8_e4m3, 4.0f, g);
    CHECK(matmul_fp8_path(odd, b, DType::f32) == Fp8GemmPath::cublaslt_padded);
    CHECK(matmul_fp8_path(random_fp8({32, 64}, DType::f8_e5m2, 4.0f, g), random_fp8({48, 64}, DType::f8_e5m2, 4.0f, g),
                          DType::f32) == Fp8GemmPath::dequantize_fallback);
  } else {
    MESSAGE("this GPU has no FP8 tensor cores: every matmul_fp8 takes the dequantize fallback");
  }
}

OCTET_CUDA_TEST("matmul_fp8: autotune picks an algorithm without changing results beyond accumulation") {
  manual_seed(91);
  const Device g = Device::cuda(0), c = Device::cpu();
  const bool before = fp8_gemm_autotune();
  Tensor a = random_fp8({1024, 1024}, DType::f8_e5m2, 100.0f, g), b = random_fp8({1024, 1024}, DType::f8_e4m3, 8.0f, g);
  Tensor bias = randn({1024}).to(DType::bf16).to(g), sa = scalar(0.5f, g), sb = scalar(0.25f, g);
  for (bool fast : {false, true}) {
    set_fp8_gemm_autotune(true);
    CHECK(fp8_gemm_autotune());
    const double acc = fast ? (1.0 + 1024 / 32.0) * std::ldexp(1.0, -13) : std::ldexp(1.0, -11);
    for (int call = 0; call < 3; ++call) {  // the first call times the candidates, a later one switches
      Tensor y = matmul_fp8(a, b, sa, sb, DType::bf16, bias, fast);
      check_against_reference(y, a.to(c), b.to(c), sa.to(c), sb.to(c), bias.to(c), acc);
    }
    set_fp8_gemm_autotune(false);
    CHECK(!fp8_gemm_autotune());
  }
  set_fp8_gemm_autotune(before);
}

OCTET_CUDA_TEST("LinearFP8: CUDA agrees with the CPU emulation; crossover") {
  const Device g = Device::cuda(0), c = Device::cpu();
  for (nn::Fp8Recipe recipe : {nn::Fp8Recipe::current, nn::Fp8Recipe::delayed}) {
    manual_seed(90);
    nn::LinearFP8 lc(256, 192, true, c), lg(256, 192, true, g);
    lc.recipe = lg.recipe = recipe;
    lg.crossover_macs = 0;
    {
      NoGradGuard ng;
      lg.weight.copy_(lc.weight);
      lg.bias.copy_(lc.bias);
    }
    Tensor xc = leaf(randn({64, 256})), xg = leaf(xc.to(g));
    Tensor gy = randn({64, 192});
    // One forward per layer: a second forward would see the delayed recipe's updated scale.
    Tensor yc = lc.forward(xc);
    backward(yc, gy);
    Tensor yg = lg.forward(xg);
    CHECK(lg.last_forward_fp8());
    backward(yg, gy.to(g));
    // The casts give the same codes and scales on both devices (tested above), so only the GEMM
    // accumulation differs: at most ~2^-11 relative without fast accumulation (the backward).
    CHECK(test::rel_error(yg.to(c), yc) < 5e-3);
    CHECK(test::rel_error(xg.grad().to(c), xc.grad()) < 2e-3);
    CHECK(test::rel_error(lg.weight.grad().to(c), lc.weight.grad()) < 2e-3);
    CHECK(test::rel_error(lg.bias.grad().to(c), lc.bias.grad()) < 1e-5);
  }
  // Below the crossover a CUDA layer runs the plain GEMM: the same bits as Linear's formula.
  nn::LinearFP8 small(64, 32, true, g);
  Tensor x = randn({8, 64}).to(g);
  Tensor y = small.forward(x);
  CHECK(!small.last_forward_fp8());
  CHECK(test::bitwise_equal(y, nn::Linear(small).forward(x)));
}

}  // namespace
