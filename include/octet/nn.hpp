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

// PyTorch's default initialization: weight kaiming-uniform with a = sqrt(5) (U(-1/sqrt(in),
// 1/sqrt(in))), bias U(-1/sqrt(in), 1/sqrt(in)). Uses the global random stream.
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

namespace init {
void xavier_uniform_(Tensor& t, double gain = 1.0);
void uniform_(Tensor& t, double lo, double hi);
}  // namespace init

// p -= lr * p.grad() for every parameter with a gradient (in place, no autograd recording).
void sgd_step(const std::vector<Tensor>& parameters, double lr);

}  // namespace octet::nn
