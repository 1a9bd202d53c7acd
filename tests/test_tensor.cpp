// Tensor: construction, shapes, device transfer, dtype conversion, reshape, t(), errors.
#include <cmath>

#include "tests/helpers.hpp"

using namespace octet;

namespace {

void check_roundtrip(Device d) {
  std::vector<float> v{1.5f, -2.0f, 3.25f, 0.0f, 7.0f, -0.5f};
  Tensor t = Tensor::from_vector(v, {2, 3}, d);
  CHECK(t.shape() == Shape{2, 3});
  CHECK(t.dtype() == DType::f32);
  CHECK(t.device() == d);
  CHECK(t.numel() == 6);
  CHECK(t.to_vector<float>() == v);
  Tensor c = t.clone();
  CHECK(c.data() != t.data());
  CHECK(c.to_vector<float>() == v);
  // copies share storage
  Tensor alias = t;
  CHECK(alias.data() == t.data());
  Tensor r = t.reshape({3, -1});
  CHECK(r.shape() == Shape{3, 2});
  CHECK(r.data() == t.data());
  Tensor tt = t.t();
  CHECK(tt.shape() == Shape{3, 2});
  CHECK(tt.to_vector<float>() == std::vector<float>{1.5f, 0.0f, -2.0f, 7.0f, 3.25f, -0.5f});
  CHECK(Tensor::full({2, 2}, 3.0, DType::f64, d).to_vector<double>() == std::vector<double>(4, 3.0));
  CHECK(Tensor::zeros({0, 5}, DType::f16, d).numel() == 0);
  CHECK(Tensor::ones({3}, DType::i64, d).to_vector<int64_t>() == std::vector<int64_t>(3, 1));
  CHECK(Tensor::from_vector(std::vector<float>{4.5f}, {}, d).item() == 4.5);
}

void check_dtype_conversion(Device d) {
  std::vector<float> v{1.0f, -2.5f, 65504.0f, 1e6f, 0.1f, -300.7f, 1e-8f, NAN};
  Tensor t = Tensor::from_vector(v, {8}, d);
  auto h = t.to(DType::f16).to_vector<Half>();
  auto b = t.to(DType::bf16).to_vector<BFloat16>();
  auto e4 = t.to(DType::f8_e4m3).to_vector<Float8E4M3>();
  auto e5 = t.to(DType::f8_e5m2).to_vector<Float8E5M2>();
  auto i = t.to(DType::i32).to_vector<int32_t>();
  auto u = t.to(DType::u8).to_vector<uint8_t>();
  for (size_t k = 0; k < v.size(); ++k) {
    CHECK(h[k].bits == float_to_half_bits(v[k]));
    CHECK(b[k].bits == float_to_bf16_bits(v[k]));
    CHECK(e4[k].bits == float_to_e4m3_bits(v[k]));
    CHECK(e5[k].bits == float_to_e5m2_bits(v[k]));
  }
  CHECK(i[0] == 1);
  CHECK(i[1] == -2);      // truncation toward zero
  CHECK(i[7] == 0);       // NaN -> 0
  CHECK(u[1] == 0);       // saturates at 0
  CHECK(u[3] == 255);     // and at 255
  // back to f32 is exact
  auto back = t.to(DType::f16).to(DType::f32).to_vector<float>();
  CHECK(back[2] == 65504.0f);
  CHECK(std::isinf(back[3]));
}

void check_zero_sized(Device d) {
  Tensor e = Tensor::empty({0}, DType::f32, d);
  CHECK(e.to_vector<float>().empty());
  CHECK(e.clone().numel() == 0);
  CHECK(e.to(DType::f16).numel() == 0);
  CHECK(Tensor::empty({4, 0}, DType::f32, d).t().shape() == Shape{0, 4});
}

}  // namespace

OCTET_TEST_BOTH("tensor round trip, alias, reshape, transpose", check_roundtrip)
OCTET_TEST_BOTH("tensor dtype conversion matches the host conversion", check_dtype_conversion)
OCTET_TEST_BOTH("zero-sized tensors", check_zero_sized)

TEST_CASE("tensor errors name the op and argument") {
  Tensor t = Tensor::zeros({2, 3});
  CHECK_THROWS_WITH_AS(t.reshape({4, 2}), doctest::Contains("Tensor::reshape"), Error);
  CHECK_THROWS_WITH_AS(t.reshape({-1, -1}), doctest::Contains("at most one -1"), Error);
  CHECK_THROWS_WITH_AS(Tensor::zeros({2, 3, 4}).t(), doctest::Contains("2 dimensions"), Error);
  CHECK_THROWS_WITH_AS(t.item(), doctest::Contains("exactly one element"), Error);
  CHECK_THROWS_WITH_AS(Tensor::from_vector(std::vector<float>{1, 2, 3}, {2, 2}), doctest::Contains("4 values"), Error);
  CHECK_THROWS_WITH_AS(Tensor::empty({-1}), doctest::Contains("non-negative"), Error);
  CHECK_THROWS_WITH_AS(t.data_ptr<double>(), doctest::Contains("dtype f64"), Error);
  CHECK_THROWS_AS(Tensor().shape(), Error);
  CHECK_THROWS_WITH_AS(Device::parse("tpu"), doctest::Contains("cpu, cuda or cuda:N"), Error);
  CHECK(Device::parse("cuda:3") == Device::cuda(3));
  if (!test::has_gpu()) {
    CHECK_THROWS_WITH_AS(Tensor::zeros({2}, DType::f32, Device::cuda(0)), doctest::Contains("no CUDA device"), Error);
  } else {
    CHECK_THROWS_WITH_AS(Tensor::zeros({2}, DType::f32, Device::cuda(cuda_device_count())), doctest::Contains("device"), Error);
  }
}

TEST_CASE("host storage is 64-byte aligned") {
  for (int64_t n : {1, 3, 17, 1000}) {
    Tensor t = Tensor::empty({n}, DType::u8);
    CHECK(reinterpret_cast<uintptr_t>(t.data()) % 64 == 0);
  }
}

OCTET_CUDA_TEST("device round trip and cross-device copy_") {
  Tensor h = randn({37, 5});
  Tensor g = h.to(Device::cuda(0));
  CHECK(test::bitwise_equal(g.to(Device::cpu()), h));
  Tensor dst = Tensor::zeros({37, 5}, DType::f64, Device::cuda(0));
  dst.copy_(h);
  CHECK(test::max_abs_diff(dst, h.to(DType::f64)) == 0.0);
  MemoryStats before = memory_stats(0);
  { Tensor big = Tensor::empty({1 << 20}, DType::f32, Device::cuda(0)); }
  synchronize(Device::cuda(0));
  CHECK(memory_stats(0).used <= before.used + 4096);
}

OCTET_CUDA_TEST("out of memory raises octet::Error with the sizes and leaks nothing") {
  synchronize(Device::cuda(0));
  const MemoryStats before = memory_stats(0);
  const int64_t huge = int64_t{1} << 48;  // 256 TiB of f32: no GPU has it
  CHECK_THROWS_WITH_AS(Tensor::empty({huge}, DType::f32, Device::cuda(0)), doctest::Contains("out of memory on cuda:0: asked for"), Error);
  CHECK_THROWS_WITH_AS(Tensor::empty({huge}, DType::f32, Device::cuda(0)), doctest::Contains("bytes free of"), Error);
  synchronize(Device::cuda(0));
  const MemoryStats after = memory_stats(0);
  CHECK(after.used == before.used);
  // the device still works afterwards
  Tensor t = Tensor::full({1000}, 2.0, DType::f32, Device::cuda(0));
  CHECK(sum(t).item() == 2000.0);
}
