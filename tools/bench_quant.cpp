// Benchmarks of the quant family for octet bench (issue 3 "Performance"): 64M elements,
// quantize_blockwise (f32 at blocksize 4096 and 64, f16 at 4096), dequantize_blockwise f32,
// global quantize and dequantize, and the fused fake-quantize the FP8 matmuls use. Bandwidth
// counts the bytes an op must move (input read once + outputs written), next to the copy
// ceiling of the same run; targets and bitsandbytes 0.49.2's numbers (same GPU) in target/note.
// quantize_blockwise also runs on memory the caller owns (Tensor::from_blob over cudaMalloc): the
// op reads it where it lies, so the row should match the octet-owned one.
#include <cuda_runtime_api.h>

#include <functional>
#include <string>

#include "tools/bench.hpp"

namespace octet::bench {
namespace {

constexpr int64_t kN = int64_t(64) << 20;

// One op: the median of single calls (each between two events: includes the host's launch
// latency, as a lone call sees it) and the per-call time of calls issued back to back (what
// the GPU spends; the launch latency hidden).
void measure(Context& ctx, const std::string& name, const std::string& params, double bytes,
             const std::function<void()>& fn, const char* target = "", const char* note = "") {
  double mn = 0;
  const double ms = ctx.time_ms([&](int) { fn(); }, &mn);
  ctx.add_bandwidth("quant", name, params, bytes, ms, mn, target, note);
  const double b2b = ctx.time_back_to_back_ms([&](int) { fn(); });
  ctx.add_bandwidth("quant", name + ", back to back", params, bytes, b2b, b2b);
}

void bench_quant(Context& ctx) {
  const Code code;
  manual_seed(1);
  auto blockwise = [&](DType t, int64_t bs, const char* target, const char* note) {
    const Tensor A = randn({kN}, t, ctx.device);
    const double bytes = double(A.nbytes()) + double(kN) + 4.0 * double((kN + bs - 1) / bs);
    measure(ctx, "quantize_blockwise", cat(dtype_name(t), " n=64M blocksize=", bs), bytes,
            [&] { (void)quantize_blockwise(A, code, bs); }, target, note);
  };
  blockwise(DType::f32, 4096, ">= 2500 GB/s", "bitsandbytes 0.49.2: 730 GB/s");
  blockwise(DType::f32, 64, ">= 2300 GB/s", "bitsandbytes 0.49.2: 441 GB/s");
  blockwise(DType::f16, 4096, ">= 2400 GB/s", "bitsandbytes 0.49.2: 458 GB/s");
  {
    void* caller_memory = nullptr;
    if (cudaMalloc(&caller_memory, kN * sizeof(float)) != cudaSuccess)
      throw Error(cat("bench quant: cudaMalloc of ", kN * sizeof(float), " bytes failed"));
    Tensor wrapped = Tensor::from_blob(caller_memory, {kN}, DType::f32, ctx.device, [](void* p) { cudaFree(p); });
    wrapped.copy_(randn({kN}, DType::f32, ctx.device));
    const double bytes = double(wrapped.nbytes()) + double(kN) + 4.0 * double(kN / 4096);
    measure(ctx, "quantize_blockwise", "f32 n=64M blocksize=4096, from_blob over the caller's cudaMalloc", bytes,
            [&] { (void)quantize_blockwise(wrapped, code, 4096); }, "", "no copy: as the octet-owned f32 row");
  }

  const Tensor A = randn({kN}, DType::f32, ctx.device);
  const Quantized qb = quantize_blockwise(A, code, 4096);
  measure(ctx, "dequantize_blockwise", "f32 n=64M blocksize=4096", 5.0 * double(kN),
          [&] { (void)dequantize_blockwise(qb.codes, qb.state); }, ">= 2600 GB/s", "bitsandbytes 0.49.2: ~1800 GB/s");
  measure(ctx, "quantize", "f32 n=64M (global: absmax pass + quantize pass, no host sync)", 5.0 * double(kN),
          [&] { (void)quantize(A, code); }, "<= 0.25 ms", "bitsandbytes 0.49.2: 1.09 ms");
  const Quantized qg = quantize(A, code);
  measure(ctx, "dequantize", "f32 n=64M (global)", 5.0 * double(kN), [&] { (void)dequantize(qg.codes, qg.state); },
          "<= 0.13 ms", "bitsandbytes 0.49.2: 0.58 ms");

  const Code e4m3 = Code::fp8_e4m3();
  const Tensor H = randn({kN}, DType::f16, ctx.device);
  measure(ctx, "fake_quantize_blockwise", "f16 n=64M blocksize=1024 fp8_e4m3", 4.0 * double(kN),
          [&] { (void)fake_quantize_blockwise(H, e4m3, 1024); }, "", "fused quantize + dequantize (FP8 matmul operands)");
  measure(ctx, "fake_quantize", "f32 n=64M fp8_e4m3 (global)", 8.0 * double(kN), [&] { (void)fake_quantize(A, e4m3); });
  measure(ctx, "fake_quantize", "f16 n=64M fp8_e4m3 (global)", 4.0 * double(kN), [&] { (void)fake_quantize(H, e4m3); },
          "", "absmax pass + fused pass: 3 tensor passes counted as 2");
}

}  // namespace

OCTET_BENCH("quant", bench_quant)

}  // namespace octet::bench
