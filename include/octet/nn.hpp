// Layers (row-major; y = x W^T + b with weight (out, in)), initializers and a plain SGD step.
#pragma once
#include <vector>

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

// bitsandbytes' LinearFP8Mixed: forward through matmul_fp8_mixed(x, weight^T) (+ bias) with
// bsz = pick(in), bsz2 = pick(out) (fp8.hpp; pick(0) = 64); E4M3/E5M2 code tables created
// with the layer on its device. x must have the weight's dtype.
class LinearFP8Mixed : public Linear {
 public:
  LinearFP8Mixed(int64_t in_features, int64_t out_features, bool bias = true, Device device = Device::cpu(),
                 DType dtype = DType::f32);
  Tensor forward(const Tensor& x) override;
  int64_t bsz = 0, bsz2 = 0;
  Code fw_code, bw_code;
};

// bitsandbytes' LinearFP8Global (which is broken upstream; here it works): forward through
// matmul_fp8_global. bsz/bsz2 are picked as in LinearFP8Mixed but unused (as upstream).
class LinearFP8Global : public Linear {
 public:
  LinearFP8Global(int64_t in_features, int64_t out_features, bool bias = true, Device device = Device::cpu(),
                  DType dtype = DType::f32);
  Tensor forward(const Tensor& x) override;
  int64_t bsz = 0, bsz2 = 0;
  Code fw_code, bw_code;
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
