// Helpers shared by the optim suites (tests/test_optim*.cpp): an optimizer of each algorithm by
// number, and a scalar's value.
#pragma once
#include <memory>
#include <vector>

#include "octet/octet.hpp"

namespace octet::test {

// 0: SGD (momentum 0.9, weight decay 0.01), 1: AdamW, 2: AdamW8bit (both weight decay 0.01).
inline std::unique_ptr<optim::Optimizer> make_optimizer(int algorithm, const std::vector<Tensor>& params,
                                                        int percentile) {
  if (algorithm == 0)
    return std::make_unique<optim::SGD>(params, optim::SGDOptions{0.01, 0.9, 0.0, 0.01, false, percentile});
  if (algorithm == 1)
    return std::make_unique<optim::AdamW>(params, optim::AdamWOptions{1e-2, 0.9, 0.999, 1e-8, 0.01, percentile});
  return std::make_unique<optim::AdamW8bit>(params, optim::AdamW8bitOptions{1e-2, 0.9, 0.999, 1e-8, 0.01, percentile});
}

inline float f32_value(const Tensor& scalar) { return scalar.to_vector<float>()[0]; }

}  // namespace octet::test
