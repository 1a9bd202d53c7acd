// Helpers shared by the files of the fp8_gemm suite (tests/test_fp8_gemm.cpp,
// test_fp8_gemm_linear.cpp, test_fp8_gemm_cuda.cpp): the FP8 and high-precision dtypes the cases
// loop over, FP8 codes from and to floats (convert.hpp) and from and to tensors, random FP8
// operands, the output tolerance of an FP8 GEMM and its check against the f32 GEMM of the
// dequantized operands, GEMM sizes, and a fresh f32 leaf.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "octet/convert.hpp"
#include "tests/helpers.hpp"

namespace octet::fp8_gemm_test {

inline const DType kFp8[] = {DType::f8_e4m3, DType::f8_e5m2};
inline const DType kHigh[] = {DType::f32, DType::f16, DType::bf16};

inline float decode(DType fp8, uint8_t b) {
  return fp8 == DType::f8_e4m3 ? e4m3_bits_to_float(b) : e5m2_bits_to_float(b);
}
inline uint8_t encode(DType fp8, float v) {
  return fp8 == DType::f8_e4m3 ? float_to_e4m3_bits(v) : float_to_e5m2_bits(v);
}
inline Tensor scalar(float v, Device d) { return Tensor::from_vector(std::vector<float>{v}, Shape{}, d); }
inline std::vector<uint8_t> codes(const Tensor& q) {
  Tensor h = q.to(Device::cpu());
  std::vector<uint8_t> out(static_cast<size_t>(h.numel()));
  if (!out.empty()) std::memcpy(out.data(), h.data(), out.size());
  return out;
}
inline Tensor from_codes(const std::vector<uint8_t>& c, DType fp8, const Shape& shape, Device d) {
  return Tensor::from_host(c.data(), c.size(), fp8, shape, d);
}
// Random FP8 codes (no NaN) with values spread over the format's range.
inline Tensor random_fp8(const Shape& shape, DType fp8, float spread, Device d) {
  Tensor x = scale(randn(shape), spread);
  return cast_to_fp8(x, fp8, scalar(1.0f, Device::cpu())).data.to(d);
}

// Relative rounding allowance of the output (and of the bias addition): a few ulp.
inline double out_eps(DType t) { return t == DType::f32 ? 1.0 / (1 << 22) : t == DType::f16 ? 1.0 / 1024 : 1.0 / 128; }

// |out - ref| <= out_eps |ref| + acc_tol * (|a||b|^T) elementwise, ref the f32 GEMM of the
// dequantized operands (+ bias).
inline void check_against_reference(const Tensor& out, const Tensor& a, const Tensor& b, const Tensor& sa,
                                    const Tensor& sb, const Tensor& bias, double acc_tol) {
  const int64_t k = a.size(-1);
  Tensor da = dequantize_fp8(a, sa).to(Device::cpu()).reshape({-1, k});
  Tensor db = dequantize_fp8(b, sb).to(Device::cpu());
  Tensor ref = matmul(da, db.t());
  if (bias.defined()) ref = add_bias(ref, bias.to(DType::f32, Device::cpu()));
  const Tensor absref = matmul(octet::abs(da), octet::abs(db).t());
  const auto o = test::values(out), r = test::values(ref), ar = test::values(absref);
  REQUIRE(o.size() == r.size());
  size_t bad = 0;
  for (size_t i = 0; i < o.size(); ++i)
    if (!(std::fabs(o[i] - r[i]) <= out_eps(out.dtype()) * std::fabs(r[i]) + acc_tol * ar[i] + 1e-30)) ++bad;
  CHECK(bad == 0);
}

struct GemmCase {
  int64_t m, k, n;
};

// A fresh f32 leaf with t's values.
inline Tensor leaf(const Tensor& t) { return t.detach().clone().requires_grad_(); }

}  // namespace octet::fp8_gemm_test
