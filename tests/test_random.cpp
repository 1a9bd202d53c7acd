// rand/randn: reproducible per seed, distribution sanity, and bit-identical uniforms across
// devices (normals within a few ulp).
#include <cmath>

#include "tests/helpers.hpp"

using namespace octet;

namespace {

void check_reproducible(Device d) {
  manual_seed(1234);
  Tensor a = rand({1000}, DType::f32, d);
  Tensor b = randn({333}, DType::f32, d);  // odd count
  manual_seed(1234);
  CHECK(test::bitwise_equal(rand({1000}, DType::f32, d), a));
  CHECK(test::bitwise_equal(randn({333}, DType::f32, d), b));
  Tensor c = rand({1000}, DType::f32, d);
  CHECK_FALSE(test::bitwise_equal(c, a));  // the stream advanced
  auto u = a.to_vector<float>();
  double mean = 0;
  for (float x : u) {
    CHECK(x > 0.0f);
    CHECK(x <= 1.0f);
    mean += x;
  }
  CHECK(std::fabs(mean / 1000 - 0.5) < 0.05);
  auto z = randn({20000}, DType::f64, d).to_vector<double>();
  double m = 0, s = 0;
  for (double x : z) m += x;
  m /= z.size();
  for (double x : z) s += (x - m) * (x - m);
  s = std::sqrt(s / z.size());
  CHECK(std::fabs(m) < 0.03);
  CHECK(std::fabs(s - 1.0) < 0.03);
  CHECK(randn({3, 0}, DType::bf16, d).shape() == Shape{3, 0});
  CHECK(rand({4, 5}, DType::f16, d).dtype() == DType::f16);
}

}  // namespace

OCTET_TEST_BOTH("random numbers are reproducible and well distributed", check_reproducible)

TEST_CASE("first Philox uniforms for seed 1234 on the host") {
  manual_seed(1234);
  auto u = rand({2}).to_vector<float>();
  CHECK(u[0] == doctest::Approx(0.1272079).epsilon(1e-6));
  CHECK(u[1] == doctest::Approx(0.853469).epsilon(1e-6));
}

TEST_CASE("consecutive draws equal one longer draw (host generator continues without re-seeding)") {
  for (DType t : {DType::f32, DType::f64}) {
    manual_seed(5);
    Tensor whole_u = rand({20}, t);
    Tensor whole_n = randn({20}, t);
    manual_seed(5);
    Tensor a = rand({10}, t), b = rand({10}, t);  // b continues where a ended
    Tensor c = randn({6}, t), d = randn({14}, t);  // kind switch, then a continuation
    auto wu = whole_u.to_vector<double>(), wn = whole_n.to_vector<double>();
    auto av = a.to_vector<double>(), bv = b.to_vector<double>(), cv = c.to_vector<double>(), dv = d.to_vector<double>();
    for (size_t i = 0; i < 10; ++i) {
      CHECK(av[i] == wu[i]);
      CHECK(bv[i] == wu[10 + i]);
    }
    for (size_t i = 0; i < 6; ++i) CHECK(cv[i] == wn[i]);
    for (size_t i = 0; i < 14; ++i) CHECK(dv[i] == wn[6 + i]);
  }
}

TEST_CASE("random errors") {
  CHECK_THROWS_WITH_AS(rand({2}, DType::i32), doctest::Contains("f32, f64, f16 or bf16"), Error);
  CHECK_THROWS_WITH_AS(randn({-2}), doctest::Contains("non-negative"), Error);
}

OCTET_CUDA_TEST("uniforms are bit-identical on CPU and GPU; normals agree to 1e-5") {
  for (int64_t n : {1, 7, 1 << 20}) {
    manual_seed(99);
    Tensor hu = rand({n});
    Tensor hn = randn({n});
    Tensor hd = rand({n}, DType::f64);
    manual_seed(99);
    Tensor gu = rand({n}, DType::f32, Device::cuda(0));
    Tensor gn = randn({n}, DType::f32, Device::cuda(0));
    Tensor gd = rand({n}, DType::f64, Device::cuda(0));
    CHECK(test::bitwise_equal(gu, hu));
    CHECK(test::bitwise_equal(gd, hd));
    CHECK(test::max_abs_diff(gn, hn) < 1e-5);
  }
}
