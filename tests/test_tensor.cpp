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

// copy_ between parts of one buffer that overlap: the result is what a copy through a temporary
// gives (memcpy on overlapping ranges is undefined), and a copy onto itself changes nothing.
namespace {
void check_overlapping_copy(Device d) {
  const int64_t n = 1001;
  std::vector<float> values(n);
  for (int64_t i = 0; i < n; ++i) values[static_cast<size_t>(i)] = static_cast<float>(i) * 0.5f - 7.0f;
  for (const int64_t shift : {int64_t{1}, int64_t{-1}, int64_t{333}}) {
    Tensor flat = Tensor::from_vector(values, d);
    const int64_t len = n - (shift > 0 ? shift : -shift);
    const int64_t dst_start = shift > 0 ? shift : 0, src_start = shift > 0 ? 0 : -shift;
    flat.narrow(0, dst_start, len).copy_(flat.narrow(0, src_start, len));
    const std::vector<float> got = flat.to_vector<float>();
    for (int64_t i = 0; i < n; ++i) {
      const bool written = i >= dst_start && i < dst_start + len;
      const float want = values[static_cast<size_t>(written ? i - dst_start + src_start : i)];
      CHECK_MESSAGE(got[static_cast<size_t>(i)] == want, "shift " << shift << ", element " << i);
    }
  }
  Tensor flat = Tensor::from_vector(values, d);
  flat.copy_(flat.narrow(0, 0, n));
  CHECK(flat.to_vector<float>() == values);
}
}  // namespace
OCTET_TEST_BOTH("copy_ between overlapping views of one buffer", check_overlapping_copy)

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

// Every public Tensor/Device/runtime function that takes an argument it can reject: the whole
// message, "<op>: argument '<arg>': expected <what>, got <what>", is required.
TEST_CASE("tensor errors: every function, whole messages") {
  const std::string undefined = ": argument 'self': expected a defined tensor, got an undefined (default-constructed) tensor";
  const Tensor u;
  CHECK_THROWS_WITH_AS(Tensor::full({2, -3}, 1.0), "Tensor::full: argument 'shape': expected non-negative sizes, got (2, -3)", Error);
  CHECK_THROWS_WITH_AS(Tensor::zeros({-1}), "Tensor::zeros: argument 'shape': expected non-negative sizes, got (-1,)", Error);
  CHECK_THROWS_WITH_AS(Tensor::ones({-4}), "Tensor::ones: argument 'shape': expected non-negative sizes, got (-4,)", Error);
  CHECK_THROWS_WITH_AS(Tensor::empty({2}, static_cast<DType>(99)), "Tensor::empty: argument 'dtype': expected one of the DType enumerators, got the value 99", Error);
  // sizes whose element or byte count does not fit in int64 (they used to wrap around)
  const int64_t big = int64_t{1} << 32;
  CHECK_THROWS_WITH_AS(Tensor::empty({big, big}), "Tensor::empty: argument 'shape': expected at most 2^63 - 1 bytes of f32, got (4294967296, 4294967296), more than that", Error);
  CHECK_THROWS_WITH_AS(Tensor::full({int64_t{1} << 62}, 0.0, DType::f64), "Tensor::full: argument 'shape': expected at most 2^63 - 1 bytes of f64, got (4611686018427387904,), more than that", Error);
  CHECK_THROWS_WITH_AS(Tensor::from_vector(std::vector<float>{1}, {big, big}), doctest::Contains("Tensor::from_vector: argument 'shape': expected at most 2^63 - 1 bytes"), Error);
  CHECK_THROWS_WITH_AS(shape_numel({big, big}), "shape_numel: argument 'shape': expected at most 2^63 - 1 elements, got (4294967296, 4294967296)", Error);
  CHECK(shape_numel({big, big, 0}) == 0);
  CHECK(Tensor::empty({big, big, 0}).numel() == 0);
  CHECK(Tensor::empty({0}).reshape({big, big, 0}).shape() == Shape{big, big, 0});
  CHECK_THROWS_WITH_AS(Tensor::zeros({0}).reshape({big, big, 2}), "Tensor::reshape: argument 'shape': expected a shape with 0 elements, got (4294967296, 4294967296, 2)", Error);
  CHECK_THROWS_WITH_AS(Tensor::zeros({2, 3}).reshape({-2, 3}), "Tensor::reshape: argument 'shape': expected non-negative sizes or one -1, got (-2, 3)", Error);
  CHECK_THROWS_WITH_AS(Tensor::zeros({2, 3}).reshape({4, -1}), "Tensor::reshape: argument 'shape': expected a shape with 6 elements, got (4, -1)", Error);
  CHECK_THROWS_WITH_AS(Tensor::zeros({2, 3}).reshape({7}), "Tensor::reshape: argument 'shape': expected a shape with 6 elements (from (2, 3)), got (7,)", Error);
  // from_host: a null pointer for values is refused (it used to be read)
  CHECK_THROWS_WITH_AS(Tensor::from_host(nullptr, 4, DType::f32, {4}, Device::cpu()), "Tensor::from_host: argument 'data': expected a pointer to 4 values, got a null pointer", Error);
  CHECK(Tensor::from_host(nullptr, 0, DType::f32, {0, 3}, Device::cpu()).shape() == Shape{0, 3});
  CHECK_THROWS_WITH_AS(Tensor::from_vector(std::vector<float>{1, 2}, {3}), "Tensor::from_vector: argument 'values': expected 3 values for shape (3,), got 2 values", Error);
  CHECK_THROWS_WITH_AS(Tensor::zeros({2, 3}).size(2), "Tensor::size: argument 'd': expected a dimension in [-2, 2), got 2", Error);
  CHECK_THROWS_WITH_AS(Tensor::zeros({2, 3}).size(-3), "Tensor::size: argument 'd': expected a dimension in [-2, 2), got -3", Error);
  CHECK_THROWS_WITH_AS(Tensor::zeros({}).size(0), "Tensor::size: argument 'd': expected a dimension in [0, 0), got 0", Error);
  CHECK_THROWS_WITH_AS(u.size(0), ("Tensor::size" + undefined).c_str(), Error);
  CHECK_THROWS_WITH_AS(u.shape(), ("Tensor::shape" + undefined).c_str(), Error);
  CHECK_THROWS_WITH_AS(u.dtype(), ("Tensor::dtype" + undefined).c_str(), Error);
  CHECK_THROWS_WITH_AS(u.device(), ("Tensor::device" + undefined).c_str(), Error);
  CHECK_THROWS_WITH_AS(u.data(), ("Tensor::data" + undefined).c_str(), Error);
  CHECK_THROWS_WITH_AS(u.to(DType::f16), ("Tensor::to" + undefined).c_str(), Error);
  CHECK_THROWS_WITH_AS(u.to(Device::cpu()), ("Tensor::to" + undefined).c_str(), Error);
  CHECK_THROWS_WITH_AS(u.clone(), ("Tensor::clone" + undefined).c_str(), Error);
  CHECK_THROWS_WITH_AS(u.detach(), ("Tensor::detach" + undefined).c_str(), Error);
  CHECK_THROWS_WITH_AS(u.grad(), ("Tensor::grad" + undefined).c_str(), Error);
  CHECK_THROWS_WITH_AS(Tensor().zero_grad(), ("Tensor::zero_grad" + undefined).c_str(), Error);
  CHECK_THROWS_WITH_AS(Tensor().fill_(1.0), ("Tensor::fill_" + undefined).c_str(), Error);
  CHECK_THROWS_WITH_AS(Tensor().copy_(Tensor::zeros({1})), ("Tensor::copy_" + undefined).c_str(), Error);
  CHECK_THROWS_WITH_AS(Tensor::zeros({2}).copy_(Tensor::zeros({3})), "Tensor::copy_: argument 'src': expected shape (2,), got shape (3,)", Error);
  CHECK_THROWS_WITH_AS(Tensor::zeros({2}).copy_(u), "Tensor::copy_: argument 'src': expected a defined tensor, got an undefined (default-constructed) tensor", Error);
  CHECK_THROWS_WITH_AS(Tensor().requires_grad_(), ("Tensor::requires_grad_" + undefined).c_str(), Error);
  CHECK_THROWS_WITH_AS(u.t(), ("Tensor::t" + undefined).c_str(), Error);
  CHECK_THROWS_WITH_AS(Tensor::zeros({3}).t(), "Tensor::t: argument 'self': expected 2 dimensions, got 1 dimensions, shape (3,)", Error);
  CHECK_THROWS_WITH_AS(Tensor::zeros({2, 2}).item(), "Tensor::item: argument 'self': expected a tensor with exactly one element, got f32(2, 2) on cpu", Error);
  CHECK_THROWS_WITH_AS(Tensor::zeros({2}).data_ptr<int32_t>(), "Tensor::data_ptr: argument 'T': expected dtype i32, got dtype f32", Error);
  CHECK(u.str() == "undefined tensor");
  // set_grad: the gradient must fit the tensor (it used to be stored as given)
  Tensor x = Tensor::zeros({2, 3});
  CHECK_THROWS_WITH_AS(x.set_grad(Tensor::zeros({3, 2})), "Tensor::set_grad: argument 'grad': expected shape (2, 3), got shape (3, 2)", Error);
  CHECK_THROWS_WITH_AS(x.set_grad(Tensor::zeros({2, 3}, DType::f64)), "Tensor::set_grad: argument 'grad': expected dtype f32, got dtype f64", Error);
  CHECK_THROWS_WITH_AS(Tensor().set_grad(x), ("Tensor::set_grad" + undefined).c_str(), Error);
  CHECK_FALSE(x.grad().defined());
  x.set_grad(Tensor::ones({2, 3}));
  CHECK(x.grad().to_vector<float>() == std::vector<float>(6, 1.0f));
  x.set_grad(Tensor());
  CHECK_FALSE(x.grad().defined());
  // Device::parse
  CHECK_THROWS_WITH_AS(Device::parse("cuda:"), "Device::parse: argument 'name': expected cpu, cuda or cuda:N, got cuda:", Error);
  CHECK_THROWS_WITH_AS(Device::parse("cuda:1x"), "Device::parse: argument 'name': expected cpu, cuda or cuda:N, got cuda:1x", Error);
  CHECK_THROWS_WITH_AS(Device::parse("cuda:99999"), "Device::parse: argument 'name': expected a device index below 1024, got cuda:99999", Error);
  CHECK_THROWS_WITH_AS(Device::parse(""), "Device::parse: argument 'name': expected cpu, cuda or cuda:N, got ", Error);
}

// A CUDA device that this machine does not have, for every function that takes a device: with
// no GPU, "no CUDA device"; with n GPUs, cuda:n and cuda:-1 are out of range.
TEST_CASE("tensor and runtime errors: devices this machine does not have") {
  const int n = cuda_device_count();
  for (int index : {n, -1}) {
    CAPTURE(index);
    const Device bad = Device::cuda(index);
    const std::string given = n == 0 ? ": no CUDA device is available on this machine (cuda_device_count() == 0)"
                                     : cat(": argument 'device': expected cuda:0 .. cuda:", n - 1, ", got cuda:", index);
    CHECK_THROWS_WITH_AS(Tensor::empty({2}, DType::f32, bad), ("Tensor::empty" + given).c_str(), Error);
    CHECK_THROWS_WITH_AS(Tensor::zeros({2}, DType::f32, bad), ("Tensor::zeros" + given).c_str(), Error);
    CHECK_THROWS_WITH_AS(Tensor::ones({2}, DType::f32, bad), ("Tensor::ones" + given).c_str(), Error);
    CHECK_THROWS_WITH_AS(Tensor::full({2}, 3.0, DType::f32, bad), ("Tensor::full" + given).c_str(), Error);
    CHECK_THROWS_WITH_AS(Tensor::from_vector(std::vector<float>{1}, bad), ("Tensor::from_vector" + given).c_str(), Error);
    CHECK_THROWS_WITH_AS(Tensor::zeros({2}).to(bad), ("Tensor::to" + given).c_str(), Error);
    CHECK_THROWS_WITH_AS(Tensor::zeros({2}).to(DType::f64, bad), ("Tensor::to" + given).c_str(), Error);
    CHECK_THROWS_WITH_AS(synchronize(bad), ("synchronize" + given).c_str(), Error);
    CHECK_THROWS_WITH_AS(current_stream(index), ("current_stream" + given).c_str(), Error);
    CHECK_THROWS_WITH_AS(set_current_stream(index, nullptr), ("set_current_stream" + given).c_str(), Error);
    CHECK_THROWS_WITH_AS(memory_stats(index), ("memory_stats" + given).c_str(), Error);
  }
  synchronize(Device::cpu());  // a no-op, never an error
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
