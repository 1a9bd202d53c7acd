// Benchmarks of the clip family for octet bench: percentile_clipping on a 64M-element gradient
// (GB/s of the gradient read, against the copy ceiling), the same on a gradient the caller owns
// (Tensor::from_blob over cudaMalloc: read where it lies, so as fast), scale_by_ on the same size,
// and the 4x4 call in microseconds in steady state, eager and as a replayed CUDA graph of the
// ClipState form.
// Small calls are timed kCalls at a time between the events; the record is the time per call.
#include <cuda_runtime_api.h>

#include "tools/bench.hpp"

namespace octet::bench {
namespace {

constexpr int kCalls = 100;

void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(cat("bench clip: ", what, ": ", cudaGetErrorString(e)));
}

void large(Context& ctx, DType t) {
  const int64_t n = int64_t(64) << 20;
  Tensor g = randn({n}, t, ctx.device);
  Tensor vec = Tensor::zeros({100}, DType::f32, ctx.device);
  int64_t step = 1;
  double mn = 0;
  double ms = ctx.time_ms([&](int) { (void)percentile_clipping(g, vec, step++); }, &mn);
  const bool f32 = t == DType::f32;
  ctx.add_bandwidth("clip", "percentile_clipping", cat(dtype_name(t), " n=64M"), double(g.nbytes()), ms, mn,
                    f32 ? ">= 2600 GB/s" : "", f32 ? "bitsandbytes 0.49.2: 1376 GB/s" : "");
  const Tensor half = Tensor::full({}, 0.5, DType::f32, ctx.device);
  ms = ctx.time_ms([&](int) { scale_by_(g, half); }, &mn);
  ctx.add_bandwidth("clip", "scale_by_", cat(dtype_name(t), " n=64M scale 0.5"), 2.0 * double(g.nbytes()), ms, mn);
}

void caller_owned(Context& ctx) {
  const int64_t n = int64_t(64) << 20;
  void* caller_memory = nullptr;
  cuda_ok(cudaMalloc(&caller_memory, n * sizeof(float)), "cudaMalloc");
  Tensor g = Tensor::from_blob(caller_memory, {n}, DType::f32, ctx.device, [](void* p) { cudaFree(p); });
  g.copy_(randn({n}, DType::f32, ctx.device));
  Tensor vec = Tensor::zeros({100}, DType::f32, ctx.device);
  int64_t step = 1;
  double mn = 0;
  const double ms = ctx.time_ms([&](int) { (void)percentile_clipping(g, vec, step++); }, &mn);
  ctx.add_bandwidth("clip", "percentile_clipping", "f32 n=64M, from_blob over the caller's cudaMalloc",
                    double(g.nbytes()), ms, mn, "", "no copy: as the octet-owned f32 row");
}

void small(Context& ctx) {
  Tensor g = randn({4, 4}, DType::f32, ctx.device);
  Tensor vec = Tensor::zeros({100}, DType::f32, ctx.device);
  int64_t step = 1;
  double ms = ctx.time_ms([&](int) {
    for (int c = 0; c < kCalls; ++c) (void)percentile_clipping(g, vec, step++);
  });
  ctx.add_value("clip", "percentile_clipping", "f32 4x4 eager, per call", ms * 1e3 / kCalls, "us", ms / kCalls,
                "<= 12 us", "bitsandbytes 0.49.2: 188 us (host sync)");

  ClipState state = ClipState::create(ctx.device);
  cudaStream_t s = current_stream(ctx.device.index);
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  cuda_ok(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), "begin capture");
  (void)percentile_clipping(g, state);
  cuda_ok(cudaStreamEndCapture(s, &graph), "end capture");
  cuda_ok(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
  ms = ctx.time_ms([&](int) {
    for (int c = 0; c < kCalls; ++c) cuda_ok(cudaGraphLaunch(exec, s), "graph launch");
  });
  ctx.add_value("clip", "percentile_clipping", "f32 4x4 ClipState, CUDA graph replay, per call", ms * 1e3 / kCalls,
                "us", ms / kCalls, "", "one graph launch per call");
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
}

void bench_clip(Context& ctx) {
  manual_seed(0);
  large(ctx, DType::f32);
  caller_owned(ctx);
  large(ctx, DType::bf16);
  small(ctx);
}

}  // namespace

OCTET_BENCH("clip", bench_clip)

}  // namespace octet::bench
