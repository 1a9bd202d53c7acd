// Layers (row-major; y = x W^T + b with weight (out, in)), initializers and a plain SGD step:
// nn::Linear, the simulated FP8 layers of bitsandbytes (LinearFP8Mixed, LinearFP8Global:
// src/nn_linear_fp8_simulated.cpp) and the real FP8 tensor-core layer (LinearFP8:
// src/nn_linear_fp8.cpp).
#pragma once
#include <memory>
#include <vector>

#include "octet/fp8_gemm.hpp"
#include "octet/fp8_simulated.hpp"
#include "octet/quant.hpp"
#include "octet/tensor.hpp"

namespace octet::nn {

class Module {
 public:
  virtual ~Module() = default;
  virtual Tensor forward(const Tensor& x) = 0;
  virtual std::vector<Tensor> parameters() const = 0;
};

// y = x W^T + b for x of shape (N, in) or (B, N, in), in f32, f64, f16 or bf16 (x must have the
// layer's dtype and device). PyTorch's default initialization: weight kaiming-uniform with
// a = sqrt(5), i.e. U(-1/sqrt(in), 1/sqrt(in)), then bias U(-1/sqrt(in), 1/sqrt(in)) (0 when
// in = 0), from the global random stream. parameters() is {weight, bias} ({weight} without bias).
class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true, Device device = Device::cpu(),
         DType dtype = DType::f32);
  Tensor forward(const Tensor& x) override;
  std::vector<Tensor> parameters() const override;
  int64_t in_features = 0, out_features = 0;
  Tensor weight;  // (out, in), requires grad
  Tensor bias;    // (out), requires grad; undefined without bias
};

// What LinearFP8Mixed and LinearFP8Global share: a Linear (same initialization, weight, bias,
// parameters()) whose forward is y = matmul_fp8_*(x, weight^T) + bias (fp8_simulated.hpp), with
// bitsandbytes' block sizes bsz = pick(in), bsz2 = pick(out) (pick(0) = 64) and the E4M3 forward /
// E5M2 backward code tables, created with the layer on its device. x must have the weight's
// dtype. The two layers differ only in the matmul: mixed (blockwise) or global.
class LinearFP8Simulated : public Linear {
 public:
  int64_t bsz = 0, bsz2 = 0;
  Code fw_code, bw_code;

 protected:
  enum class Matmul { mixed, global };
  LinearFP8Simulated(Matmul matmul, int64_t in_features, int64_t out_features, bool bias, Device device,
                     DType dtype);
  // The forward with the given product (Fp8Product::simulated for the global matmul).
  Tensor forward_with(const Tensor& x, Fp8Product product);

 private:
  Matmul matmul_;
};

// bitsandbytes' LinearFP8Mixed: forward through matmul_fp8_mixed(x, weight^T, ..., bsz, bsz2).
class LinearFP8Mixed : public LinearFP8Simulated {
 public:
  LinearFP8Mixed(int64_t in_features, int64_t out_features, bool bias = true, Device device = Device::cpu(),
                 DType dtype = DType::f32);
  Tensor forward(const Tensor& x) override;
  // Fp8Product::tensor_cores: the forward product on FP8 tensor cores where it applies (fp8_simulated.hpp).
  Fp8Product product = Fp8Product::simulated;
};

// bitsandbytes' LinearFP8Global (which is broken upstream; here it works): forward through
// matmul_fp8_global. bsz/bsz2 are picked as in LinearFP8Mixed but unused (as upstream).
class LinearFP8Global : public LinearFP8Simulated {
 public:
  LinearFP8Global(int64_t in_features, int64_t out_features, bool bias = true, Device device = Device::cpu(),
                  DType dtype = DType::f32);
  Tensor forward(const Tensor& x) override;
};

// Initializers write in place without recording (as under NoGradGuard), drawing from the global
// random stream: for one seed they give the same bits on the CPU and on CUDA. Values are drawn
// in f32 (f64 for f64 tensors) and rounded once to the tensor's dtype. Fans of a tensor with
// shape (out, in, k...) are fan_in = in * prod(k), fan_out = out * prod(k) (at least 2-D).
// Empty tensors are left alone.
namespace init {
// U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out)).
void xavier_uniform_(Tensor& t, double gain = 1.0);
// U(-b, b) with b = sqrt(6 / ((1 + a^2) fan_in)) (PyTorch, fan_in mode, leaky_relu gain);
// a = sqrt(5) gives Linear's U(-1/sqrt(in), 1/sqrt(in)).
void kaiming_uniform_(Tensor& t, double a = 0.0);
// U(lo, hi), lo <= hi, both finite.
void uniform_(Tensor& t, double lo, double hi);
}  // namespace init

// p -= lr * p.grad() (axpy_: one rounding) for every parameter with a gradient, in place,
// without recording; gradients are left as they are. lr must be finite and >= 0.
void sgd_step(const std::vector<Tensor>& parameters, double lr);

}  // namespace octet::nn

// ---- nn::LinearFP8 (src/nn_linear_fp8.cpp): the real FP8 tensor-core layer of fp8_gemm.hpp ----
namespace octet::nn {

// Below this many multiply-adds per GEMM (M * N * K) a LinearFP8 on CUDA runs as plain GEMMs in
// its master dtype (as nn::Linear), because the casts cost more than FP8 saves. 4096^3 = 2^36:
// measured on an H100 with `octet bench fp8_gemm` (square bf16 training steps: FP8 0.9x at 3072,
// 1.1x at 4096, 1.3x at 6144; docs/fp8_gemm.md). Override per layer.
inline constexpr int64_t kLinearFP8CrossoverMacs = int64_t{1} << 36;

enum class Fp8Recipe { current, delayed };

// y = x W^T + b with FP8 GEMMs, HYBRID format: x and W cast to E4M3 for the forward, the output
// gradient to E5M2 for the backward; grad_x = dY W and grad_W = dY^T X are FP8 GEMMs too
// (E5M2 x E4M3), grad_b = column sums of dY fused into dY's cast, in the master dtype. Master
// weight, bias and x: f32, bf16 or f16 (x has the weight's dtype and device; any leading dims).
// Scales: per tensor, current scaling (default) or delayed scaling for x and dY (`delayed`); the
// weight always uses current
// scaling. The weight's FP8 copy (and its transpose) is reused until the weight changes: the
// cache is keyed on the weight's storage and its in-place write counter (copy_, fill_, axpy_,
// sgd_step bump it); call invalidate() after writing the weight any other way (raw pointers).
// Where it runs: CPU: the FP8 emulation always (exact FP8 rounding, f32 accumulation). CUDA:
// FP8 when M*N*K >= crossover_macs on a GPU with FP8 tensor cores, otherwise plain GEMMs;
// crossover_macs <= 0 forces FP8 everywhere (dequantize fallback on GPUs without FP8 cores).
// A Linear (same initialization, weight, bias, parameters()); dtype f32, bf16 or f16.
class LinearFP8 : public Linear {
 public:
  LinearFP8(int64_t in_features, int64_t out_features, bool bias = true, Device device = Device::cpu(),
            DType dtype = DType::f32);
  Tensor forward(const Tensor& x) override;
  void invalidate();                                  // drop the cached FP8 weight
  bool last_forward_fp8() const { return last_fp8_; }  // whether the last forward ran FP8 GEMMs

  Fp8Recipe recipe = Fp8Recipe::current;
  DelayedScaling delayed;  // with Fp8Recipe::delayed (histories are created on first use)
  int64_t crossover_macs = kLinearFP8CrossoverMacs;
  bool fast_accum_forward = true, fast_accum_backward = false;

  struct State;  // FP8 weight cache and delayed-scaling histories (shared with pending backwards)

 private:
  std::shared_ptr<State> state_;
  bool last_fp8_ = false;
};

}  // namespace octet::nn
