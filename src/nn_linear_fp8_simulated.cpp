// nn::LinearFP8Mixed and nn::LinearFP8Global (bitsandbytes.research.nn, spec section 6):
// y = matmul_fp8_*(x, weight^T) + bias with weight (out, in). The weight is handed to the FP8
// matmul core as B held transposed (detail::Fp8Args::b_transposed), so no weight^T copy is made;
// values and gradients equal matmul_fp8_*(x, weight.t(), ...). Codes are created with the layer,
// on its device (upstream creates them lazily on the first input's device).
#include "octet/fp8_simulated.hpp"
#include "octet/nn.hpp"
#include "octet/ops.hpp"
#include "src/fp8_simulated_internal.hpp"

namespace octet::nn {
namespace {

Tensor fp8_linear(const char* op, detail::Fp8Variant v, const Tensor& x, const Tensor& weight, const Tensor& bias,
                  const Code& fw, const Code& bw, int64_t bsz, int64_t bsz2,
                  Fp8Product product = Fp8Product::simulated) {
  detail::Fp8Args p{.op = op, .a_name = "x", .b_name = "weight", .variant = v, .b_transposed = true,
                    .bsz = bsz, .bsz2 = bsz2, .product = product};
  Tensor y = detail::fp8_matmul(p, x, weight, fw, bw);
  return bias.defined() ? add_bias(y, bias) : y;
}

// bsz = pick(in), bsz2 = pick(out); E4M3 forward and E5M2 backward tables placed on the device.
template <class Layer>
void setup(Layer& layer, Device device) {
  layer.bsz = detail::fp8_pick_block_size(layer.in_features);
  layer.bsz2 = detail::fp8_pick_block_size(layer.out_features);
  layer.fw_code = Code::fp8_e4m3();
  layer.bw_code = Code::fp8_e5m2();
  layer.fw_code.table(device);
  layer.bw_code.table(device);
}

}  // namespace

LinearFP8Mixed::LinearFP8Mixed(int64_t in_features, int64_t out_features, bool bias, Device device, DType dtype)
    : Linear(in_features, out_features, bias, device, dtype) {
  setup(*this, device);
}

Tensor LinearFP8Mixed::forward(const Tensor& x) {
  return fp8_linear("LinearFP8Mixed::forward", detail::Fp8Variant::mixed, x, weight, bias, fw_code, bw_code, bsz,
                    bsz2, product);
}

LinearFP8Global::LinearFP8Global(int64_t in_features, int64_t out_features, bool bias, Device device, DType dtype)
    : Linear(in_features, out_features, bias, device, dtype) {
  setup(*this, device);
}

Tensor LinearFP8Global::forward(const Tensor& x) {
  return fp8_linear("LinearFP8Global::forward", detail::Fp8Variant::global, x, weight, bias, fw_code, bw_code, bsz,
                    bsz2);
}

}  // namespace octet::nn
