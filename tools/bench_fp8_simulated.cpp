// Benchmarks of the fp8_simulated family for octet bench (issue 6 "Performance", H100 targets):
// - matmul_fp8_mixed forward, f16, 4096^3 and 8192^3, against a plain cuBLAS f16 GEMM measured in
//   the same run (octet::matmul), as a ratio; plus its parts (the fused fake-quant passes); with
//   Fp8Product::tensor_cores too, where that forward applies;
// - forward + backward (autograd, leaves' grads dropped between runs) against the plain
//   forward + backward as three cuBLAS GEMMs with transpose flags (the ideal baseline), and
//   against octet::matmul through autograd;
// - the LinearFP8Mixed training step of test_fp8linear's model (1024 -> 2048 -> gelu -> 1024,
//   mean, backward, SGD) against the same model with nn::Linear, at the test's batch 10 and at 4096.
#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "src/gemm.hpp"
#include "tools/bench.hpp"

namespace octet::bench {
namespace {

constexpr const char* kFamily = "fp8";

double gemm_flops(int64_t m, int64_t k, int64_t n) { return 2.0 * static_cast<double>(m) * k * n; }

// The median over `rounds` of time(b) / time(a), the two timed alternately: the cuBLAS GEMM's
// rate drifts by 10 % and more between runs on the H200 (clocks, power), which one pair of medians
// taken minutes apart turns into noise in the ratio.
// note gets the medians of both timings over all rounds, b_ms the median of b's.
double interleaved_ratio(Context& ctx, const std::function<void(int)>& a, const std::function<void(int)>& b,
                         std::string* note, double* b_ms, int rounds = 7) {
  std::vector<double> r, ta, tb;
  for (int i = 0; i < rounds; ++i) {
    ta.push_back(ctx.time_ms(a));
    tb.push_back(ctx.time_ms(b));
    r.push_back(tb.back() / ta.back());
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  *b_ms = median(tb);
  *note = cat("median of ", rounds, " alternating timings; medians ", median(ta), " and ", *b_ms, " ms");
  return median(r);
}

void forward(Context& ctx, int64_t n, const char* target, const char* upstream) {
  const Device d = ctx.device;
  const Code fw = Code::fp8_e4m3(), bw = Code::fp8_e5m2();
  Tensor A = randn({n, n}, DType::f16, d), B = randn({n, n}, DType::f16, d);
  const std::string params = cat("f16 ", n, "^3");
  double pmin = 0, fmin = 0, amin = 0, bmin = 0;
  const double plain = ctx.time_ms([&](int) { (void)matmul(A, B); }, &pmin);
  const double fp8 = ctx.time_ms([&](int) { (void)matmul_fp8_mixed(A, B, fw, bw); }, &fmin);
  const int64_t bsz = fp8_block_sizes(A, B).first;
  const double qa = ctx.time_ms([&](int) { (void)fake_quantize_blockwise(A, fw, bsz); }, &amin);
  const double qb = ctx.time_ms([&](int) { (void)fake_quantize(B, fw); }, &bmin);
  const double bytes = 2.0 * static_cast<double>(A.nbytes());  // read + write
  ctx.add_rate(kFamily, "cuBLAS f16 GEMM (plain)", params, gemm_flops(n, n, n), plain, pmin, ctx.gemm_tflops(DType::f16));
  ctx.add_rate(kFamily, "matmul_fp8_mixed forward", params, gemm_flops(n, n, n), fp8, fmin, ctx.gemm_tflops(DType::f16));
  ctx.add_bandwidth(kFamily, "fake_quantize_blockwise (A)", cat(params, " bsz=", bsz), bytes, qa, amin);
  ctx.add_bandwidth(kFamily, "fake_quantize (B, global)", params, bytes, qb, bmin, "",
                    "absmax pass + fused pass: 3 tensor passes counted as 2");
  ctx.add_value(kFamily, "matmul_fp8_mixed forward / plain", params, fp8 / plain, "x", fp8, target,
                cat("bitsandbytes 0.49.2: ", upstream));
  const auto plain_fn = [&](int) { (void)matmul(A, B); };
  std::string note;
  double ms = 0;
  const double ri = interleaved_ratio(ctx, plain_fn, [&](int) { (void)matmul_fp8_mixed(A, B, fw, bw); }, &note, &ms);
  ctx.add_value(kFamily, "matmul_fp8_mixed forward / plain, interleaved", params, ri, "x", ms, target, note);
  // B written by an octet elementwise op (a weight after sgd_step/axpy_) carries an amax hint:
  // its global absmax pass disappears (src/amax_hint.hpp).
  const Tensor Bh = scale(B, 1.0);
  const double rh = interleaved_ratio(ctx, plain_fn, [&](int) { (void)matmul_fp8_mixed(A, Bh, fw, bw); }, &note, &ms);
  ctx.add_value(kFamily, "matmul_fp8_mixed forward / plain, B with an amax hint, interleaved", params, rh, "x", ms,
                target, "B = scale(B, 1), as a weight an octet op wrote; " + note);
  // The same codes multiplied on FP8 tensor cores (Fp8Product::tensor_cores), where it applies.
  if (fp8_tensor_core_forward(A, B, fw)) {
    const auto tc = [&](int) { (void)matmul_fp8_mixed(A, B, fw, bw, -1, -1, Fp8Product::tensor_cores); };
    const double rt = interleaved_ratio(ctx, plain_fn, tc, &note, &ms);
    ctx.add_value(kFamily, "matmul_fp8_mixed forward, tensor_cores / plain, interleaved", params, rt, "x", ms, target,
                  note);
    const double rth = interleaved_ratio(
        ctx, plain_fn, [&](int) { (void)matmul_fp8_mixed(A, Bh, fw, bw, -1, -1, Fp8Product::tensor_cores); }, &note,
        &ms);
    ctx.add_value(kFamily, "matmul_fp8_mixed forward, tensor_cores / plain, B with an amax hint, interleaved", params,
                  rth, "x", ms, target, note);
  }
  // Back to back (launch latency hidden): what the GPU spends per call.
  const double plain_b = ctx.time_back_to_back_ms([&](int) { (void)matmul(A, B); });
  const double fp8_b = ctx.time_back_to_back_ms([&](int) { (void)matmul_fp8_mixed(A, B, fw, bw); });
  const double qa_b = ctx.time_back_to_back_ms([&](int) { (void)fake_quantize_blockwise(A, fw, bsz); });
  const double qb_b = ctx.time_back_to_back_ms([&](int) { (void)fake_quantize(B, fw); });
  ctx.add_bandwidth(kFamily, "fake_quantize_blockwise (A), back to back", cat(params, " bsz=", bsz), bytes, qa_b, qa_b);
  ctx.add_bandwidth(kFamily, "fake_quantize (B, global), back to back", params, bytes, qb_b, qb_b);
  ctx.add_value(kFamily, "matmul_fp8_mixed forward / plain, back to back", params, fp8_b / plain_b, "x", fp8_b);
}

void forward_backward(Context& ctx, int64_t n) {
  const Device d = ctx.device;
  const Code fw = Code::fp8_e4m3(), bw = Code::fp8_e5m2();
  Tensor A = randn({n, n}, DType::f16, d).requires_grad_(), B = randn({n, n}, DType::f16, d).requires_grad_();
  Tensor G = randn({n, n}, DType::f16, d);
  Tensor Ad = A.detach(), Bd = B.detach();
  Tensor out = Tensor::empty({n, n}, DType::f16, d), ga = Tensor::empty({n, n}, DType::f16, d),
         gb = Tensor::empty({n, n}, DType::f16, d);
  const std::string params = cat("f16 ", n, "^3");
  auto through_autograd = [&](auto&& op) {
    return [&, op](int) {
      A.zero_grad();
      B.zero_grad();
      backward(op(A, B), G);
    };
  };
  double gmin = 0, mmin = 0, fmin = 0;
  const std::function<void(int)> three_gemms = [&](int) {
    detail::gemm_into(Ad, Bd, out, n, n, n);
    detail::gemm_into(G, Bd, ga, n, n, n, false, true);
    detail::gemm_into(Ad, G, gb, n, n, n, true, false);
  };
  const double gemms = ctx.time_ms(three_gemms, &gmin);
  const double plain = ctx.time_ms(through_autograd([](const Tensor& a, const Tensor& b) { return matmul(a, b); }), &mmin);
  const std::function<void(int)> fp8_step = through_autograd([&](const Tensor& a, const Tensor& b) {
    return matmul_fp8_mixed(a, b, fw, bw);
  });
  const double fp8 = ctx.time_ms(fp8_step, &fmin);
  const double flops = 3 * gemm_flops(n, n, n);
  ctx.add_rate(kFamily, "plain fwd+bwd: 3 cuBLAS GEMMs", params, flops, gemms, gmin, ctx.gemm_tflops(DType::f16));
  ctx.add_rate(kFamily, "plain fwd+bwd: matmul through autograd", params, flops, plain, mmin, ctx.gemm_tflops(DType::f16));
  ctx.add_rate(kFamily, "matmul_fp8_mixed fwd+bwd (autograd)", params, flops, fp8, fmin, ctx.gemm_tflops(DType::f16));
  ctx.add_value(kFamily, "matmul_fp8_mixed fwd+bwd / 3 cuBLAS GEMMs", params, fp8 / gemms, "x", fp8, "<= 1.2x",
                "bitsandbytes 0.49.2: 2.48x (vs torch fwd+bwd)");
  std::string note;
  double ms = 0;
  const double ri = interleaved_ratio(ctx, three_gemms, fp8_step, &note, &ms);
  ctx.add_value(kFamily, "matmul_fp8_mixed fwd+bwd / 3 cuBLAS GEMMs, interleaved", params, ri, "x", ms, "<= 1.2x",
                note);
  ctx.add_value(kFamily, "matmul_fp8_mixed fwd+bwd / matmul fwd+bwd (both autograd)", params, fp8 / plain, "x", fp8);
  // A weight updated by an octet op (sgd_step, axpy_) carries an amax hint: no absmax pass over B.
  Tensor Bh = scale(Bd, 1.0).requires_grad_();
  const std::function<void(int)> fp8_hinted = [&](int) {
    A.zero_grad();
    Bh.zero_grad();
    backward(matmul_fp8_mixed(A, Bh, fw, bw), G);
  };
  const double rh = interleaved_ratio(ctx, three_gemms, fp8_hinted, &note, &ms);
  ctx.add_value(kFamily, "matmul_fp8_mixed fwd+bwd / 3 cuBLAS GEMMs, B with an amax hint, interleaved", params, rh,
                "x", ms, "<= 1.2x", note);
  if (fp8_tensor_core_forward(Ad, Bd, fw)) {
    const std::function<void(int)> fp8_tc = through_autograd([&](const Tensor& a, const Tensor& b) {
      return matmul_fp8_mixed(a, b, fw, bw, -1, -1, Fp8Product::tensor_cores);
    });
    const double rt = interleaved_ratio(ctx, three_gemms, fp8_tc, &note, &ms);
    ctx.add_value(kFamily, "matmul_fp8_mixed fwd+bwd, tensor_cores forward / 3 cuBLAS GEMMs, interleaved", params, rt,
                  "x", ms, "<= 1.2x", note);
  }
}

template <class Layer>
double train_step_ms(Context& ctx, int64_t batch, double* min_ms) {
  const Device d = ctx.device;
  const int64_t h = 1024;
  Layer l1(h, 2 * h, true, d), l2(2 * h, h, true, d);
  std::vector<Tensor> params = l1.parameters();
  for (const Tensor& p : l2.parameters()) params.push_back(p);
  Tensor x = randn({batch, h}, DType::f32, d);
  return ctx.time_ms([&](int) {
    for (Tensor& p : params) p.zero_grad();
    backward(mean(l2.forward(gelu(l1.forward(x)))));
    nn::sgd_step(params, 1e-3);
  }, min_ms);
}

void linear_training(Context& ctx) {
  for (int64_t batch : {int64_t{10}, int64_t{4096}}) {
    const std::string params = cat("f32 batch ", batch, ", 1024->2048->1024, gelu, mean, SGD");
    double lmin = 0, fmin = 0;
    const double lin = train_step_ms<nn::Linear>(ctx, batch, &lmin);
    const double fp8 = train_step_ms<nn::LinearFP8Mixed>(ctx, batch, &fmin);
    ctx.add_value(kFamily, "nn::Linear training step", params, lin, "ms", lin);
    ctx.add_value(kFamily, "LinearFP8Mixed training step", params, fp8, "ms", fp8);
    ctx.add_value(kFamily, "LinearFP8Mixed / nn::Linear training step", params, fp8 / lin, "x", fp8);
  }
}

void run(Context& ctx) {
  (void)ctx.gemm_tflops(DType::f16);  // the GEMM ceilings before this family's rows
  forward(ctx, 4096, "<= 1.25x", "4.31x");
  forward(ctx, 8192, "<= 1.1x", "2.72x");
  forward_backward(ctx, 4096);
  linear_training(ctx);
}

}  // namespace

OCTET_BENCH("fp8", run)

}  // namespace octet::bench
