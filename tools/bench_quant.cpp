// Benchmarks of the quant family for octet bench (issue 3 "Performance"): 64M elements,
// quantize_blockwise (f32 at blocksize 4096 and 64, f16 at 4096), dequantize_blockwise f32,
// global quantize and dequantize, and the fused fake-quantize the FP8 matmuls use. Bandwidth
// counts the bytes an op must move (input read once + outputs written), next to the copy
// ceiling of the same run; targets and bitsandbytes 0.49.2's numbers (same GPU) in target/note.
#include "tools/bench.hpp"

namespace octet::bench {
namespace {

constexpr int64_t kN = int64_t(64) << 20;

void bench_quant(Context& ctx) {
  const Code code;
  manual_seed(1);
  double mn = 0, ms = 0;
  auto blockwise = [&](DType t, int64_t bs, const char* target, const char* note) {
    const Tensor A = randn({kN}, t, ctx.device);
    ms = ctx.time_ms([&](int) { (void)quantize_blockwise(A, code, bs); }, &mn);
    const double bytes = double(A.nbytes()) + double(kN) + 4.0 * double((kN + bs - 1) / bs);
    ctx.add_bandwidth("quant", "quantize_blockwise", cat(dtype_name(t), " n=64M blocksize=", bs), bytes, ms, mn, target,
                      note);
    const double b2b = ctx.time_back_to_back_ms([&](int) { (void)quantize_blockwise(A, code, bs); });
    ctx.add_bandwidth("quant", "quantize_blockwise, back to back", cat(dtype_name(t), " n=64M blocksize=", bs), bytes,
                      b2b, b2b);
  };
  blockwise(DType::f32, 4096, ">= 2500 GB/s", "bitsandbytes 0.49.2: 730 GB/s");
  blockwise(DType::f32, 64, ">= 2300 GB/s", "bitsandbytes 0.49.2: 441 GB/s");
  blockwise(DType::f16, 4096, ">= 2400 GB/s", "bitsandbytes 0.49.2: 458 GB/s");

  const Tensor A = randn({kN}, DType::f32, ctx.device);
  const Quantized qb = quantize_blockwise(A, code, 4096);
  ms = ctx.time_ms([&](int) { (void)dequantize_blockwise(qb.codes, qb.state); }, &mn);
  ctx.add_bandwidth("quant", "dequantize_blockwise", "f32 n=64M blocksize=4096", 5.0 * double(kN), ms, mn,
                    ">= 2600 GB/s", "bitsandbytes 0.49.2: ~1800 GB/s");

  ms = ctx.time_ms([&](int) { (void)quantize(A, code); }, &mn);
  ctx.add_bandwidth("quant", "quantize", "f32 n=64M (global: absmax pass + quantize pass, no host sync)",
                    5.0 * double(kN), ms, mn, "<= 0.25 ms", "bitsandbytes 0.49.2: 1.09 ms");
  const Quantized qg = quantize(A, code);
  ms = ctx.time_ms([&](int) { (void)dequantize(qg.codes, qg.state); }, &mn);
  ctx.add_bandwidth("quant", "dequantize", "f32 n=64M (global)", 5.0 * double(kN), ms, mn, "<= 0.13 ms",
                    "bitsandbytes 0.49.2: 0.58 ms");

  const Code e4m3 = Code::fp8_e4m3();
  const Tensor H = randn({kN}, DType::f16, ctx.device);
  ms = ctx.time_ms([&](int) { (void)fake_quantize_blockwise(H, e4m3, 1024); }, &mn);
  ctx.add_bandwidth("quant", "fake_quantize_blockwise", "f16 n=64M blocksize=1024 fp8_e4m3", 4.0 * double(kN), ms, mn,
                    "", "fused quantize + dequantize (FP8 matmul operands)");
  ms = ctx.time_ms([&](int) { (void)fake_quantize(A, e4m3); }, &mn);
  ctx.add_bandwidth("quant", "fake_quantize", "f32 n=64M fp8_e4m3 (global)", 8.0 * double(kN), ms, mn);
}

}  // namespace

OCTET_BENCH("quant", bench_quant)

}  // namespace octet::bench
