// Benchmarks of the optim family for octet bench: one step over 64M f32 and 64M bf16 parameters
// for AdamW (f32 states) and AdamW8bit, as GB/s of the bytes each must move per step against the
// copy ceiling (AdamW: read p, g, m, v and write p, m, v; AdamW8bit: the same with 1-byte states
// plus the per-block absmax), and 1000 tensors of 4096 elements updated by one optimizer (the
// multi-tensor launch) against 1000 optimizers of one tensor each (two launches per tensor), as a
// speed-up, with the replayed CUDA graph of the multi-tensor step for reference.
#include <cuda_runtime_api.h>

#include <memory>

#include "tools/bench.hpp"

namespace octet::bench {
namespace {

void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(cat("bench optim: ", what, ": ", cudaGetErrorString(e)));
}

// Bytes one step moves per parameter of dtype t (grad read included).
double bytes_per_param(bool eightbit, DType t) {
  const double p = static_cast<double>(dtype_size(t));
  const double states = eightbit ? 2.0 * (1 + 1) + 2.0 * 2 * 4 / 256 : 2.0 * (4 + 4);
  return 2 * p + p + states;
}

void large(Context& ctx, DType t, bool eightbit) {
  const int64_t n = int64_t(64) << 20;
  Tensor p = randn({n}, t, ctx.device).requires_grad_();
  p.set_grad(scale(randn({n}, t, ctx.device), 1e-3));
  std::unique_ptr<optim::Optimizer> opt;
  if (eightbit)
    opt = std::make_unique<optim::AdamW8bit>(std::vector<Tensor>{p});
  else
    opt = std::make_unique<optim::AdamW>(std::vector<Tensor>{p});
  double mn = 0;
  const double ms = ctx.time_ms([&](int) { opt->step(); }, &mn);
  const double bytes = bytes_per_param(eightbit, t) * double(n);
  ctx.add_bandwidth("optim", eightbit ? "AdamW8bit.step" : "AdamW.step",
                    cat(dtype_name(t), " params n=64M, ", eightbit ? "8-bit" : "f32", " states"), bytes, ms, mn,
                    ">= 85% of copy", cat(bytes_per_param(eightbit, t), " B/param"));
}

void many(Context& ctx) {
  constexpr int kTensors = 1000;
  constexpr int64_t kSize = 4096;
  std::vector<Tensor> params;
  for (int k = 0; k < kTensors; ++k) {
    params.push_back(randn({kSize}, DType::f32, ctx.device).requires_grad_());
    params.back().set_grad(scale(randn({kSize}, DType::f32, ctx.device), 1e-3));
  }
  optim::AdamW multi(params);
  std::vector<optim::AdamW> single;
  for (const Tensor& t : params) single.emplace_back(std::vector<Tensor>{t});
  const double multi_ms = ctx.time_ms([&](int) { multi.step(); });
  const double single_ms = ctx.time_ms([&](int) {
    for (auto& o : single) o.step();
  });
  ctx.add_value("optim", "AdamW.step multi-tensor", "1000 x 4096 f32, per step", multi_ms * 1e3, "us", multi_ms, "",
                cat("one launch per tensor: ", single_ms * 1e3, " us"));
  ctx.add_value("optim", "AdamW.step multi-tensor speed-up", "1000 x 4096 f32 vs one launch per tensor",
                single_ms / multi_ms, "x", multi_ms, ">= 3x");

  cudaStream_t s = current_stream(ctx.device.index);
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  cuda_ok(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), "begin capture");
  multi.step();
  cuda_ok(cudaStreamEndCapture(s, &graph), "end capture");
  cuda_ok(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
  const double graph_ms = ctx.time_ms([&](int) { cuda_ok(cudaGraphLaunch(exec, s), "graph launch"); });
  ctx.add_value("optim", "AdamW.step multi-tensor, CUDA graph replay", "1000 x 4096 f32, per step", graph_ms * 1e3,
                "us", graph_ms);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
}

void bench_optim(Context& ctx) {
  manual_seed(0);
  for (DType t : {DType::f32, DType::bf16})
    for (bool eightbit : {false, true}) large(ctx, t, eightbit);
  many(ctx);
}

}  // namespace

OCTET_BENCH("optim", bench_optim)

}  // namespace octet::bench
