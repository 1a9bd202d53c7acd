// Shared test helpers: GPU presence, the golden file, poisoned outputs, comparisons, and the
// OCTET_TEST_BOTH macro that registers one check as a CPU case and a CUDA case (the CUDA case
// is reported as skipped, by name, on machines without a GPU).
#pragma once
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "octet/octet.hpp"

namespace octet::test {

bool has_gpu();
// Folder holding bnb-0.49.2.safetensors: $OCTET_GOLDEN, else <source>/../shared/golden.
std::string golden_file();  // "" when absent
bool golden_available();
// The golden tensors, loaded once onto the CPU. Requires golden_available().
const TensorMap& golden();
const Tensor& golden(const std::string& name);

// A tensor whose every byte is 0xFF (NaN for floats, 255 for codes): outputs that an op leaves
// unwritten stay visibly wrong.
Tensor poisoned(const Shape& shape, DType dtype, Device device);
// The cases on more than 2^31 elements run only with OCTET_LARGE=1 (tools/gpu-check --large);
// otherwise this says so, with what the case needs, and returns false.
bool large_enabled(const char* needs);
// A 1-D view of len elements of t starting at element offset (shares storage; may be unaligned).
Tensor view(const Tensor& t, int64_t offset, int64_t len);
// Values as f64 on the host.
std::vector<double> values(const Tensor& t);
// max |a - b| over elements (NaN if shapes differ or any NaN mismatch).
double max_abs_diff(const Tensor& a, const Tensor& b);
double mean_abs_diff(const Tensor& a, const Tensor& b);
// ||a - b|| / ||b|| in f64.
double rel_error(const Tensor& a, const Tensor& b);
// Raw bytes equal (same dtype and shape).
bool bitwise_equal(const Tensor& a, const Tensor& b);

}  // namespace octet::test

#define OCTET_CONCAT_(a, b) a##b
#define OCTET_CONCAT(a, b) OCTET_CONCAT_(a, b)
// OCTET_TEST_BOTH("name", fn): fn(Device) runs as "name [cpu]" and "name [cuda]".
#define OCTET_TEST_BOTH(name, fn)                                                                \
  TEST_CASE(name " [cpu]") { fn(::octet::Device::cpu()); }                                       \
  TEST_CASE(name " [cuda]" * doctest::skip(!::octet::test::has_gpu())) { fn(::octet::Device::cuda(0)); }
#define OCTET_CUDA_TEST(name) TEST_CASE(name " [cuda]" * doctest::skip(!::octet::test::has_gpu()))
#define OCTET_GOLDEN_TEST(name) TEST_CASE(name * doctest::skip(!::octet::test::golden_available()))
