// Benchmarks of the fp8_gemm family for octet bench: the E4M3 GEMM at 8192^3 (TFLOP/s against the
// cuBLAS bf16 ceiling), the casts (GB/s of input read + FP8 written, against the copy ceiling),
// training steps (forward, backward, sgd_step) of Linear(4096->8192) -> gelu -> Linear(8192->4096)
// on 8192 tokens and of a 1024^3 layer with LinearFP8 against bf16 nn::Linear, the breakdown of
// that FP8 step into its kernels (each timed alone, amax from hints where the step has them), the
// GEMMs with and without autotune, and the crossover sweep that kLinearFP8CrossoverMacs (nn.hpp)
// should follow.
#include <functional>

#include "kernels/ops.cuh"
#include "tools/bench.hpp"

namespace octet::bench {
namespace {

Tensor one(Device d) { return Tensor::ones({}, DType::f32, d); }

void gemm(Context& ctx) {
  const int64_t n = 8192;
  const double flops = 2.0 * n * n * n;
  Tensor a = cast_to_fp8(randn({n, n}, DType::bf16, ctx.device), DType::f8_e4m3, one(ctx.device)).data;
  Tensor b = cast_to_fp8(randn({n, n}, DType::bf16, ctx.device), DType::f8_e4m3, one(ctx.device)).data;
  Tensor b5 = cast_to_fp8(randn({n, n}, DType::bf16, ctx.device), DType::f8_e5m2, one(ctx.device)).data;
  Tensor sa = one(ctx.device), sb = one(ctx.device);
  Tensor bias = randn({n}, DType::bf16, ctx.device);
  const double bf16 = ctx.gemm_tflops(DType::bf16);
  const char* path = matmul_fp8_path(a, b, DType::bf16) == Fp8GemmPath::cublaslt ? "cuBLASLt" : "NOT cuBLASLt";
  double mn = 0;
  double ms = ctx.time_ms([&](int) { (void)matmul_fp8(a, b, sa, sb, DType::bf16, {}, true); }, &mn);
  ctx.add_rate("fp8_gemm", "matmul_fp8", cat("e4m3 x e4m3 -> bf16 8192^3 fast_accum (", path, ")"), flops, ms, mn,
               bf16, ">= 1300 TFLOP/s", "torch._scaled_mm 1356; cuBLAS bf16 765");
  ms = ctx.time_ms([&](int) { (void)matmul_fp8(a, b, sa, sb, DType::bf16, bias, true); }, &mn);
  ctx.add_rate("fp8_gemm", "matmul_fp8", "e4m3 x e4m3 -> bf16 + bias 8192^3 fast_accum", flops, ms, mn, bf16);
  ms = ctx.time_ms([&](int) { (void)matmul_fp8(a, b, sa, sb, DType::bf16, {}, false); }, &mn);
  ctx.add_rate("fp8_gemm", "matmul_fp8", "e4m3 x e4m3 -> bf16 8192^3 no fast_accum", flops, ms, mn, bf16);
  ms = ctx.time_ms([&](int) { (void)matmul_fp8(b5, a, sa, sb, DType::f32, {}, false); }, &mn);
  ctx.add_rate("fp8_gemm", "matmul_fp8", "e5m2 x e4m3 -> f32 8192^3 no fast_accum (wgrad form)", flops, ms, mn, bf16);
  Tensor odd = cast_to_fp8(randn({n - 8, n}, DType::bf16, ctx.device), DType::f8_e4m3, one(ctx.device)).data;
  ms = ctx.time_ms([&](int) { (void)matmul_fp8(odd, b, sa, sb, DType::bf16, {}, true); }, &mn);
  ctx.add_rate("fp8_gemm", "matmul_fp8", "e4m3 8184x8192x8192 (padded path)", 2.0 * (n - 8) * n * n, ms, mn, bf16);
}

void casts(Context& ctx) {
  const int64_t n = 8192;
  Tensor x = randn({n, n}, DType::bf16, ctx.device);
  Tensor scale = one(ctx.device), amax = Tensor::zeros({1}, DType::f32, ctx.device);
  const double elems = double(n) * n;
  double mn = 0;
  double ms = ctx.time_ms([&](int) { (void)cast_to_fp8(x, DType::f8_e4m3, scale, amax); }, &mn);
  ctx.add_bandwidth("fp8_gemm", "cast_to_fp8", "bf16 8192^2 -> e4m3 + amax", elems * 3, ms, mn);
  ms = ctx.time_ms([&](int) { (void)cast_to_fp8(x, DType::f8_e4m3, scale, amax, true); }, &mn);
  ctx.add_bandwidth("fp8_gemm", "cast_to_fp8", "bf16 8192^2 -> e4m3 + transposed + amax", elems * 4, ms, mn);
  ms = ctx.time_ms([&](int) { (void)fp8_current_scale(fp8_amax(x), DType::f8_e4m3); }, &mn);
  ctx.add_bandwidth("fp8_gemm", "fp8_amax + fp8_current_scale", "bf16 8192^2", elems * 2, ms, mn);
  ms = ctx.time_ms([&](int) { (void)max_abs(x); }, &mn);
  ctx.add_bandwidth("fp8_gemm", "max_abs (ops.hpp, for comparison)", "bf16 8192^2", elems * 2, ms, mn);
}

// The 8192-token step of training() taken apart: each piece LinearFP8 (current scaling) enqueues,
// timed alone on tensors of the step's shapes, then their sum against the whole step.
void breakdown(Context& ctx) {
  const Device d = ctx.device;
  const int64_t t = 8192, din = 4096, dh = 8192;
  const DType e4 = DType::f8_e4m3, e5 = DType::f8_e5m2;
  Tensor x = randn({t, din}, DType::bf16, d), w1 = randn({dh, din}, DType::bf16, d);
  Tensor h = randn({t, dh}, DType::bf16, d), w2 = randn({din, dh}, DType::bf16, d);
  Tensor dy2 = randn({t, din}, DType::bf16, d), dh1 = randn({t, dh}, DType::bf16, d);
  Tensor b1 = randn({dh}, DType::bf16, d), b2 = randn({din}, DType::bf16, d), s = one(d);
  const Fp8Cast xq = cast_to_fp8(x, e4, s, {}, true), w1q = cast_to_fp8(w1, e4, s);
  const Fp8Cast hq = cast_to_fp8(h, e4, s, {}, true), w2q = cast_to_fp8(w2, e4, s, {}, true);
  const Fp8Cast g2q = cast_to_fp8(dy2, e5, s, {}, true), g1q = cast_to_fp8(dh1, e5, s, {}, true);
  // As in the step, the amax of h, dY1 and the weights comes from the amax hint of their producer
  // (gelu, gelu's backward, sgd_step's axpy_); x and dY2 have no producer in octet: a pass.
  axpy_(w1, -1e-9, w1);
  axpy_(w2, -1e-9, w2);
  const Tensor hg = gelu(h);
  Tensor dg1;
  {
    Tensor hl = h.detach().requires_grad_();
    backward(gelu(hl), dh1);
    dg1 = hl.grad();
  }
  const std::string where = "8192 tokens, 4096->8192->4096 bf16";
  double total = 0;
  auto part = [&](const std::string& name, const std::function<void()>& fn) {
    double mn = 0;
    const double ms = ctx.time_ms([&](int) { fn(); }, &mn);
    total += ms;
    ctx.add_value("fp8_gemm", cat("step part: ", name), where, ms, "ms", ms);
  };
  auto amax_scale = [&](const Tensor& v) { (void)fp8_current_scale(fp8_amax(v), e4); };
  part("x amax + scale", [&] { amax_scale(x); });
  part("x cast + transpose", [&] { (void)cast_to_fp8(x, e4, s, {}, true); });
  part("W1 amax + scale (hint of axpy_)", [&] { amax_scale(w1); });
  part("W1 cast", [&] { (void)cast_to_fp8(w1, e4, s); });
  part("GEMM y1 = x W1^T + b1 (fast accum)", [&] { (void)matmul_fp8(xq.data, w1q.data, s, s, DType::bf16, b1, true); });
  part("gelu forward", [&] { (void)gelu(h); });
  part("h amax + scale (hint of gelu)", [&] { amax_scale(hg); });
  part("h cast + transpose", [&] { (void)cast_to_fp8(h, e4, s, {}, true); });
  part("W2 amax + scale (hint of axpy_)", [&] { amax_scale(w2); });
  part("W2 cast + transpose", [&] { (void)cast_to_fp8(w2, e4, s, {}, true); });
  part("GEMM y2 = h W2^T + b2 (fast accum)", [&] { (void)matmul_fp8(hq.data, w2q.data, s, s, DType::bf16, b2, true); });
  part("dY2 amax + scale", [&] { amax_scale(dy2); });
  part("dY2 cast + transpose + column sums", [&] { (void)cast_to_fp8(dy2, e5, s, {}, true, true); });
  part("GEMM dgrad2 = dY2 W2", [&] { (void)matmul_fp8(g2q.data, w2q.transposed, s, s, DType::bf16, {}, false); });
  part("GEMM wgrad2 = dY2^T h", [&] { (void)matmul_fp8(g2q.transposed, hq.transposed, s, s, DType::bf16, {}, false); });
  part("gelu backward (autograd)", [&] {
    Tensor hl = h.detach().requires_grad_();
    backward(gelu(hl), dh1);
  });
  part("dY1 amax + scale (hint of gelu backward)", [&] { amax_scale(dg1); });
  part("dY1 cast + transpose + column sums", [&] { (void)cast_to_fp8(dh1, e5, s, {}, true, true); });
  part("GEMM wgrad1 = dY1^T x", [&] { (void)matmul_fp8(g1q.transposed, xq.transposed, s, s, DType::bf16, {}, false); });
  part("sgd_step (4 parameters)", [&] {
    axpy_(w1, -1e-9, w1);
    axpy_(w2, -1e-9, w2);
    axpy_(b1, -1e-9, b1);
    axpy_(b2, -1e-9, b2);
  });
  ctx.add_value("fp8_gemm", "step parts: sum", where, total, "ms", total);
  part("for comparison: sum_rows(dY1) (the bias gradient before the fused column sums)", [&] { (void)sum_rows(dh1); });
  part("for comparison: dY1 cast + transpose without column sums", [&] { (void)cast_to_fp8(dh1, e5, s, {}, true); });
  part("for comparison: max_abs(h) (ops.hpp)", [&] { (void)max_abs(h); });
  part("for comparison: h amax + scale, a pass over h (no hint)", [&] { amax_scale(h); });
  // The cost of keeping the hint: gelu's kernel without the amax partials (what gelu runs for an
  // output that cannot keep a hint).
  Tensor h_out = Tensor::empty({t, dh}, DType::bf16, d);
  part("for comparison: gelu forward without the amax hint", [&] {
    (void)kernels::unary(Unary::gelu, DType::bf16, h.data(), 0.0, h_out.data(), h.numel(), nullptr,
                         current_stream(d.index));
  });
}

// The step's five GEMM shapes with the heuristic's first algorithm and with autotune.
void gemm_autotune(Context& ctx) {
  const Device d = ctx.device;
  const int64_t t = 8192, din = 4096, dh = 8192;
  struct Shape3 {
    const char* name;
    int64_t m, n, k;
    DType a;
    bool bias, fast;
  };
  const Shape3 shapes[] = {{"fwd1 (bias)", t, dh, din, DType::f8_e4m3, true, true},
                           {"fwd2 (bias)", t, din, dh, DType::f8_e4m3, true, true},
                           {"dgrad2", t, dh, din, DType::f8_e5m2, false, false},
                           {"wgrad2", din, dh, t, DType::f8_e5m2, false, false},
                           {"wgrad1", dh, din, t, DType::f8_e5m2, false, false}};
  const bool before = fp8_gemm_autotune();
  for (const Shape3& sh : shapes) {
    Tensor a = cast_to_fp8(randn({sh.m, sh.k}, DType::bf16, d), sh.a, one(d)).data;
    Tensor b = cast_to_fp8(randn({sh.n, sh.k}, DType::bf16, d), DType::f8_e4m3, one(d)).data;
    Tensor bias = sh.bias ? randn({sh.n}, DType::bf16, d) : Tensor(), s = one(d);
    for (bool tune : {false, true}) {
      set_fp8_gemm_autotune(tune);
      double mn = 0;
      const double ms = ctx.time_ms([&](int) { (void)matmul_fp8(a, b, s, s, DType::bf16, bias, sh.fast); }, &mn);
      ctx.add_rate("fp8_gemm", cat("matmul_fp8 ", sh.name, tune ? " autotuned" : " heuristic"),
                   cat(sh.m, "x", sh.n, "x", sh.k), 2.0 * sh.m * sh.n * sh.k, ms, mn, ctx.gemm_tflops(DType::bf16));
    }
  }
  set_fp8_gemm_autotune(before);
}

// One training step: forward, backward with a fixed output gradient, sgd_step (which bumps the
// weights' versions, so LinearFP8 recasts its weights every step as in real training).
template <class L>
double step_ms(Context& ctx, L& l1, L& l2, const Tensor& x, const Tensor& gy) {
  std::vector<Tensor> params = l1.parameters();
  for (const Tensor& p : l2.parameters()) params.push_back(p);
  return ctx.time_ms([&](int) {
    backward(l2.forward(gelu(l1.forward(x))), gy);
    nn::sgd_step(params, 1e-9);
    for (Tensor p : params) p.zero_grad();
  });
}

// Ratio bf16 time / FP8 time of the two-layer step (tokens x d_in -> d_hidden -> d_in).
double mlp_speedup(Context& ctx, int64_t tokens, int64_t d_in, int64_t d_hidden, int64_t crossover,
                   const std::string& target, nn::Fp8Recipe recipe = nn::Fp8Recipe::current) {
  const Device d = ctx.device;
  Tensor x = randn({tokens, d_in}, DType::bf16, d), gy = scale(randn({tokens, d_in}, DType::bf16, d), 1e-3);
  nn::Linear b1(d_in, d_hidden, true, d, DType::bf16), b2(d_hidden, d_in, true, d, DType::bf16);
  nn::LinearFP8 f1(d_in, d_hidden, true, d, DType::bf16), f2(d_hidden, d_in, true, d, DType::bf16);
  f1.crossover_macs = f2.crossover_macs = crossover;
  f1.recipe = f2.recipe = recipe;
  const double bf16_ms = step_ms(ctx, b1, b2, x, gy);
  const double fp8_ms = step_ms(ctx, f1, f2, x, gy);
  const std::string params =
      cat(tokens, " tokens, ", d_in, "->", d_hidden, "->", d_in, " bf16, ",
          recipe == nn::Fp8Recipe::current ? "current" : "delayed", " scaling, crossover ", crossover,
          f1.last_forward_fp8() ? " (FP8 GEMMs)" : " (plain GEMMs)");
  ctx.add_value("fp8_gemm", "training step nn::Linear bf16", params, bf16_ms, "ms", bf16_ms);
  ctx.add_value("fp8_gemm", "training step LinearFP8", params, fp8_ms, "ms", fp8_ms);
  const double speedup = bf16_ms / fp8_ms;
  ctx.add_value("fp8_gemm", "training step speedup (bf16 / LinearFP8)", params, speedup, "x", fp8_ms, target);
  return speedup;
}

void training(Context& ctx) {
  mlp_speedup(ctx, 8192, 4096, 8192, nn::kLinearFP8CrossoverMacs, ">= 1.5x");
  mlp_speedup(ctx, 8192, 4096, 8192, nn::kLinearFP8CrossoverMacs, ">= 1.5x", nn::Fp8Recipe::delayed);
  const bool before = fp8_gemm_autotune();
  set_fp8_gemm_autotune(!before);
  const std::string flipped = cat(">= 1.5x (autotune ", before ? "off" : "on", ")");
  mlp_speedup(ctx, 8192, 4096, 8192, nn::kLinearFP8CrossoverMacs, flipped);
  mlp_speedup(ctx, 8192, 4096, 8192, nn::kLinearFP8CrossoverMacs, flipped, nn::Fp8Recipe::delayed);
  set_fp8_gemm_autotune(before);
  mlp_speedup(ctx, 1024, 1024, 1024, nn::kLinearFP8CrossoverMacs, ">= 0.95x (no slower than bf16 by 5%)");
  // Forced FP8 on square layers: where FP8 starts to pay is the crossover for nn.hpp.
  int64_t crossover = 0;
  for (int64_t s : {1024, 1536, 2048, 3072, 4096, 6144}) {
    const double speedup = mlp_speedup(ctx, s, s, s, 0, "");
    if (crossover == 0 && speedup > 1.0) crossover = s * s * s;
  }
  ctx.add_value("fp8_gemm", "measured crossover (M*N*K, square layers)", "first size where forced FP8 beats bf16",
                double(crossover), "MACs", 0, cat("nn::kLinearFP8CrossoverMacs = ", nn::kLinearFP8CrossoverMacs));
}

void bench_fp8_gemm(Context& ctx) {
  manual_seed(0);
  if (!fp8_tensor_cores(ctx.device.index))
    ctx.add_value("fp8_gemm", "note", "this GPU has no FP8 tensor cores: matmul_fp8 runs the dequantize fallback", 0,
                  "", 0);
  (void)ctx.gemm_tflops(DType::bf16);  // the GEMM ceilings before this family's rows
  gemm(ctx);
  casts(ctx);
  breakdown(ctx);
  gemm_autotune(ctx);
  training(ctx);
}

}  // namespace

OCTET_BENCH("fp8_gemm", bench_fp8_gemm)

}  // namespace octet::bench
