// Host f16/bf16/fp8 conversions: exhaustive against the CUDA headers' host implementations on
// every machine, against the device intrinsics on a GPU, and hand-checked values.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <bit>
#include <cmath>
#include <random>

#include "kernels/convert.cuh"
#include "src/runtime_internal.hpp"
#include "tests/helpers.hpp"

using namespace octet;

namespace {

uint16_t cuda_host_half(float x) { return __half_as_ushort(__float2half_rn(x)); }
uint16_t cuda_host_bf16(float x) {
  __nv_bfloat16 b = __float2bfloat16_rn(x);
  uint16_t r;
  std::memcpy(&r, &b, 2);
  return r;
}

// Floats that probe every rounding boundary of f16/bf16: each 16-bit pattern's value, the
// midpoints to its neighbours and one float ulp either side of them, plus random floats.
std::vector<float> probe_floats() {
  std::vector<float> v;
  for (uint32_t h = 0; h < 65536; ++h) {
    for (uint32_t base : {h << 16, static_cast<uint32_t>(std::bit_cast<uint32_t>(half_bits_to_float(static_cast<uint16_t>(h))))}) {
      const float x = std::bit_cast<float>(base);
      if (std::isnan(x)) { v.push_back(x); continue; }
      v.push_back(x);
      for (uint32_t d : {0x7fffu, 0x8000u, 0x8001u, 0xfffu, 0x1000u, 0x1001u}) {
        v.push_back(std::bit_cast<float>(base + d));
        v.push_back(std::bit_cast<float>(base - d));
      }
    }
  }
  std::mt19937 rng(7);
  for (int i = 0; i < 200000; ++i) v.push_back(std::bit_cast<float>(static_cast<uint32_t>(rng())));
  for (float s : {448.0f, 464.0f, 480.0f, 57344.0f, 61440.0f, 65504.0f, 65520.0f, 65536.0f, INFINITY, 1e-10f, 0x1p-9f, 0x1p-10f, 0x1p-17f, 0x1p-16f}) {
    v.push_back(s);
    v.push_back(-s);
    v.push_back(std::nextafter(s, 0.0f));
    v.push_back(std::nextafter(s, INFINITY));
  }
  return v;
}

bool same_float(float a, float b) { return std::bit_cast<uint32_t>(a) == std::bit_cast<uint32_t>(b) || (std::isnan(a) && std::isnan(b)); }

}  // namespace

TEST_CASE("f16 and bf16 from float match the CUDA headers on boundary probes") {
  size_t bad_h = 0, bad_b = 0;
  for (float x : probe_floats()) {
    if (float_to_half_bits(x) != cuda_host_half(x)) ++bad_h;
    if (float_to_bf16_bits(x) != cuda_host_bf16(x)) ++bad_b;
  }
  CHECK(bad_h == 0);
  CHECK(bad_b == 0);
}

TEST_CASE("fp8 from float matches the CUDA headers (SATFINITE)") {
  size_t bad4 = 0, bad5 = 0;
  for (float x : probe_floats()) {
    if (float_to_e4m3_bits(x) != __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3)) ++bad4;
    if (float_to_e5m2_bits(x) != __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E5M2)) ++bad5;
  }
  CHECK(bad4 == 0);
  CHECK(bad5 == 0);
}

TEST_CASE("all 65536 f16/bf16 and 256 fp8 patterns convert to float exactly") {
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint16_t b = static_cast<uint16_t>(h);
    REQUIRE(same_float(half_bits_to_float(b), __half2float(__ushort_as_half(b))));
    REQUIRE(same_float(bf16_bits_to_float(b), std::bit_cast<float>(static_cast<uint32_t>(h) << 16)));
    if (h < 256) {
      __nv_fp8_e4m3 a; a.__x = static_cast<__nv_fp8_storage_t>(h);
      __nv_fp8_e5m2 c; c.__x = static_cast<__nv_fp8_storage_t>(h);
      REQUIRE(same_float(e4m3_bits_to_float(static_cast<uint8_t>(h)), static_cast<float>(a)));
      REQUIRE(same_float(e5m2_bits_to_float(static_cast<uint8_t>(h)), static_cast<float>(c)));
      // every finite fp8 value converts back to itself
      const float f4 = e4m3_bits_to_float(static_cast<uint8_t>(h));
      if (!std::isnan(f4)) CHECK(float_to_e4m3_bits(f4) == (f4 == 0 ? (h & 0x80) : h));
      const float f5 = e5m2_bits_to_float(static_cast<uint8_t>(h));
      if (std::isfinite(f5)) CHECK(float_to_e5m2_bits(f5) == (f5 == 0 ? (h & 0x80) : h));
    }
  }
}

TEST_CASE("hand-checked conversion values") {
  CHECK(float_to_half_bits(1.0f) == 0x3c00);
  CHECK(float_to_half_bits(65504.0f) == 0x7bff);
  CHECK(float_to_half_bits(65519.0f) == 0x7bff);
  CHECK(float_to_half_bits(65520.0f) == 0x7c00);           // tie to even -> Inf
  CHECK(float_to_half_bits(0x1p-24f) == 0x0001);           // smallest subnormal
  CHECK(float_to_half_bits(0x1p-25f) == 0x0000);           // tie to even -> 0
  CHECK(float_to_half_bits(0x1.8p-25f) == 0x0001);
  CHECK(float_to_half_bits(-0.0f) == 0x8000);
  CHECK(float_to_half_bits(NAN) == 0x7fff);
  CHECK(float_to_half_bits(1.0f + 0x1p-11f) == 0x3c00);    // tie to even (down)
  CHECK(float_to_half_bits(1.0f + 0x1.8p-10f) == 0x3c02);  // tie to even (up)
  CHECK(float_to_bf16_bits(1.0f) == 0x3f80);
  CHECK(float_to_bf16_bits(std::bit_cast<float>(0x3f808000u)) == 0x3f80);  // tie, even stays
  CHECK(float_to_bf16_bits(std::bit_cast<float>(0x3f818000u)) == 0x3f82);  // tie, odd rounds up
  CHECK(float_to_bf16_bits(NAN) == 0x7fff);
  CHECK(float_to_e4m3_bits(448.0f) == 0x7e);
  CHECK(float_to_e4m3_bits(1000.0f) == 0x7e);              // saturates
  CHECK(float_to_e4m3_bits(-INFINITY) == 0xfe);
  CHECK(float_to_e4m3_bits(NAN) == 0x7f);
  CHECK(float_to_e4m3_bits(-NAN) == 0x7f);
  CHECK(float_to_e5m2_bits(-NAN) == 0x7f);
  CHECK(float_to_e4m3_bits(0x1p-9f) == 0x01);              // smallest subnormal
  CHECK(float_to_e4m3_bits(0x1p-10f) == 0x00);             // tie -> 0
  CHECK(float_to_e5m2_bits(57344.0f) == 0x7b);
  CHECK(float_to_e5m2_bits(INFINITY) == 0x7b);             // SATFINITE
  CHECK(float_to_e5m2_bits(1.0f) == 0x3c);
  CHECK(e4m3_bits_to_float(0x7e) == 448.0f);
  CHECK(std::isnan(e4m3_bits_to_float(0x7f)));
  CHECK(std::isinf(e5m2_bits_to_float(0x7c)));
}

OCTET_CUDA_TEST("host conversions equal the device intrinsics bit for bit") {
  const std::vector<float> probes = probe_floats();
  const int64_t n = static_cast<int64_t>(probes.size());
  const Device d = Device::cuda(0);
  Tensor in = Tensor::from_vector(probes, d);
  Tensor f16 = test::poisoned({n}, DType::f16, d), bf16 = test::poisoned({n}, DType::bf16, d);
  Tensor e4 = test::poisoned({n}, DType::u8, d), e5 = test::poisoned({n}, DType::u8, d);
  kernels::probe_conversions_from_float(in.data_ptr<float>(), static_cast<uint16_t*>(f16.data()),
                                        static_cast<uint16_t*>(bf16.data()), e4.data_ptr<uint8_t>(),
                                        e5.data_ptr<uint8_t>(), n, detail::stream(d));
  auto h = f16.to_vector<Half>();
  auto b = bf16.to_vector<BFloat16>();
  auto q4 = e4.to_vector<uint8_t>();
  auto q5 = e5.to_vector<uint8_t>();
  size_t bad[4] = {0, 0, 0, 0};
  for (int64_t i = 0; i < n; ++i) {
    const float x = probes[static_cast<size_t>(i)];
    bad[0] += h[static_cast<size_t>(i)].bits != float_to_half_bits(x);
    bad[1] += b[static_cast<size_t>(i)].bits != float_to_bf16_bits(x);
    bad[2] += q4[static_cast<size_t>(i)] != float_to_e4m3_bits(x);
    bad[3] += q5[static_cast<size_t>(i)] != float_to_e5m2_bits(x);
  }
  CHECK(bad[0] == 0);
  CHECK(bad[1] == 0);
  CHECK(bad[2] == 0);
  CHECK(bad[3] == 0);

  std::vector<uint16_t> patterns(65536);
  for (uint32_t i = 0; i < 65536; ++i) patterns[i] = static_cast<uint16_t>(i);
  Tensor bits = Tensor::from_host(patterns.data(), patterns.size(), DType::f16, {65536}, d);
  Tensor a = test::poisoned({65536}, DType::f32, d), c = test::poisoned({65536}, DType::f32, d);
  Tensor p4 = test::poisoned({256}, DType::f32, d), p5 = test::poisoned({256}, DType::f32, d);
  kernels::probe_conversions_to_float(static_cast<const uint16_t*>(bits.data()), a.data_ptr<float>(), c.data_ptr<float>(),
                                      p4.data_ptr<float>(), p5.data_ptr<float>(), detail::stream(d));
  auto fa = a.to_vector<float>(), fc = c.to_vector<float>(), f4 = p4.to_vector<float>(), f5 = p5.to_vector<float>();
  size_t mism = 0;
  for (uint32_t i = 0; i < 65536; ++i) {
    mism += !same_float(fa[i], half_bits_to_float(static_cast<uint16_t>(i)));
    mism += !same_float(fc[i], bf16_bits_to_float(static_cast<uint16_t>(i)));
    if (i < 256) {
      mism += !same_float(f4[i], e4m3_bits_to_float(static_cast<uint8_t>(i)));
      mism += !same_float(f5[i], e5m2_bits_to_float(static_cast<uint8_t>(i)));
    }
  }
  CHECK(mism == 0);
  // Tensor::to on the device agrees with the host too.
  Tensor in_h = Tensor::from_vector(probes);
  CHECK(test::bitwise_equal(in.to(DType::f16), in_h.to(DType::f16)));
  CHECK(test::bitwise_equal(in.to(DType::bf16), in_h.to(DType::bf16)));
  CHECK(test::bitwise_equal(in.to(DType::f8_e4m3), in_h.to(DType::f8_e4m3)));
  CHECK(test::bitwise_equal(in.to(DType::f8_e5m2), in_h.to(DType::f8_e5m2)));
}
