// Shared test helpers: GPU presence, the golden file (tests/data, checked by its SHA-256),
// SHA-256, poisoned outputs, comparisons, and the macros that register cases: OCTET_TEST_BOTH
// (one check as a CPU case and a CUDA case), OCTET_CUDA_TEST and OCTET_LARGE_TEST. A case that
// cannot run here (no GPU; the >2^31-element cases without OCTET_LARGE=1) is reported by doctest
// as skipped, by name, never as passed.
#pragma once
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "octet/octet.hpp"

namespace octet::test {

bool has_gpu();
// SHA-256 (FIPS 180-4) of bytes, as 64 lowercase hex digits.
std::string sha256(const void* data, size_t len);
// The golden file: outputs of bitsandbytes 0.49.2 (tests/data/README.md says what it holds).
std::string golden_file();  // <source>/tests/data/bnb-0.49.2.safetensors
extern const char* const kGoldenSha256;
// The golden tensors, loaded once onto the CPU after checking the file's SHA-256. A missing or
// corrupt file throws octet::Error saying so, which fails the case that asked.
const TensorMap& golden();
const Tensor& golden(const std::string& name);

// A tensor whose every byte is 0xFF (NaN for floats, 255 for codes): outputs that an op leaves
// unwritten stay visibly wrong.
Tensor poisoned(const Shape& shape, DType dtype, Device device);
// The cases on more than 2^31 elements run only with OCTET_LARGE=1 (tools/gpu-check --large).
bool large_enabled();
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
// A CUDA case on more than 2^31 elements: skipped without a GPU or without OCTET_LARGE=1.
#define OCTET_LARGE_TEST(name) \
  TEST_CASE(name " [cuda]" * doctest::skip(!::octet::test::has_gpu() || !::octet::test::large_enabled()))
