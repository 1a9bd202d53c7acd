// Autograd engine: recording, accumulation, errors. (Gradchecks of every op: see below.)
#include "tests/helpers.hpp"

using namespace octet;

TEST_CASE("backward accumulates into leaves and frees the graph") {
  Tensor x = Tensor::from_vector(std::vector<double>{1.0, -2.0, 3.0}).requires_grad_();
  Tensor y = sum(mul(x, x));
  backward(y);
  CHECK(x.grad().to_vector<double>() == std::vector<double>{2.0, -4.0, 6.0});
  CHECK_THROWS_WITH_AS(backward(y), doctest::Contains("already freed"), Error);
  Tensor z = sum(x);
  backward(z);
  CHECK(x.grad().to_vector<double>() == std::vector<double>{3.0, -3.0, 7.0});
  x.zero_grad();
  CHECK_FALSE(x.grad().defined());
}

TEST_CASE("autograd errors and NoGradGuard") {
  Tensor x = Tensor::from_vector(std::vector<float>{1.0f, 2.0f}).requires_grad_();
  Tensor y = mul(x, x);
  CHECK_THROWS_WITH_AS(backward(y), doctest::Contains("non-scalar root"), Error);
  CHECK_THROWS_WITH_AS(backward(y, Tensor::ones({3})), doctest::Contains("shape (2,)"), Error);
  CHECK_THROWS_WITH_AS(backward(y, Tensor::ones({2}, DType::f64)), doctest::Contains("dtype f32"), Error);
  CHECK_THROWS_WITH_AS(backward(Tensor::ones({1})), doctest::Contains("does not require grad"), Error);
  CHECK_THROWS_WITH_AS(max_abs(x), doctest::Contains("has no gradient"), Error);
  {
    NoGradGuard g;
    Tensor z = mul(x, x);
    CHECK_FALSE(z.requires_grad());
    CHECK(max_abs(x).item() == 2.0);
  }
  CHECK(mul(x, x).requires_grad());
  CHECK_FALSE(x.detach().requires_grad());
  CHECK_THROWS_WITH_AS(Tensor::zeros({2}, DType::i32).requires_grad_(), doctest::Contains("floating-point"), Error);
}
