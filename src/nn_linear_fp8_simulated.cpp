// nn::LinearFP8Simulated and its two layers, LinearFP8Mixed and LinearFP8Global (bitsandbytes'
// research layers; docs/fp8-simulated.md, "Forward and backward"): y = matmul_fp8_*(x, weight^T)
// + bias with weight (out, in). The weight is handed to the FP8 matmul core as B held transposed
// (detail::Fp8Args::b_transposed), so no weight^T copy is made; values and gradients equal
// matmul_fp8_*(x, weight.t(), ...). Codes are created with the layer, on its device (upstream
// creates them lazily on the first input's device; docs/differences.md).
#include "octet/fp8_simulated.hpp"
#include "octet/nn.hpp"
#include "octet/ops.hpp"
#include "src/fp8_simulated_internal.hpp"

namespace octet::nn {

LinearFP8Simulated::LinearFP8Simulated(Matmul matmul, int64_t in_features, int64_t out_features, bool bias,
                                       Device device, DType dtype)
    : Linear(in_features, out_features, bias, device, dtype),
      bsz(detail::fp8_pick_block_size(in_features)),
      bsz2(detail::fp8_pick_block_size(out_features)),
      fw_code(Code::fp8_e4m3()),
      bw_code(Code::fp8_e5m2()),
      matmul_(matmul) {
  fw_code.table(device);  // placed on the device now
  bw_code.table(device);
}

Tensor LinearFP8Simulated::forward_with(const Tensor& x, Fp8Product product) {
  const bool mixed = matmul_ == Matmul::mixed;
  detail::Fp8Args p{.op = mixed ? "LinearFP8Mixed::forward" : "LinearFP8Global::forward",
                    .a_name = "x",
                    .b_name = "weight",
                    .variant = mixed ? detail::Fp8Variant::mixed : detail::Fp8Variant::global,
                    .b_transposed = true,
                    .bsz = bsz,
                    .bsz2 = bsz2,
                    .product = product};
  Tensor y = detail::fp8_matmul(p, x, weight, fw_code, bw_code);
  return bias.defined() ? add_bias(y, bias) : y;
}

LinearFP8Mixed::LinearFP8Mixed(int64_t in_features, int64_t out_features, bool bias, Device device, DType dtype)
    : LinearFP8Simulated(Matmul::mixed, in_features, out_features, bias, device, dtype) {}

Tensor LinearFP8Mixed::forward(const Tensor& x) { return forward_with(x, product); }

LinearFP8Global::LinearFP8Global(int64_t in_features, int64_t out_features, bool bias, Device device, DType dtype)
    : LinearFP8Simulated(Matmul::global, in_features, out_features, bias, device, dtype) {}

Tensor LinearFP8Global::forward(const Tensor& x) { return forward_with(x, Fp8Product::simulated); }

}  // namespace octet::nn
