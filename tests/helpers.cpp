// Test helpers (helpers.hpp).
#include "tests/helpers.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>

#include "octet_build_config.h"

namespace octet::test {

bool has_gpu() {
  static const bool v = cuda_device_count() > 0;
  return v;
}

std::string sha256(const void* data, size_t len) {
  static const uint32_t k[64] = {
      0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
      0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
      0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
      0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
      0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
      0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
      0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
      0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
  uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  std::vector<uint8_t> m(static_cast<const uint8_t*>(data), static_cast<const uint8_t*>(data) + len);
  m.push_back(0x80);
  while (m.size() % 64 != 56) m.push_back(0);
  for (int i = 7; i >= 0; --i) m.push_back(static_cast<uint8_t>((uint64_t{len} * 8) >> (8 * i)));
  auto rotr = [](uint32_t x, int n) { return (x >> n) | (x << (32 - n)); };
  for (size_t off = 0; off < m.size(); off += 64) {
    uint32_t w[64];
    for (int i = 0; i < 16; ++i)
      w[i] = uint32_t{m[off + 4 * i]} << 24 | uint32_t{m[off + 4 * i + 1]} << 16 | uint32_t{m[off + 4 * i + 2]} << 8 |
             m[off + 4 * i + 3];
    for (int i = 16; i < 64; ++i) {
      const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a[8];
    std::copy(h, h + 8, a);
    for (int i = 0; i < 64; ++i) {
      const uint32_t t1 =
          a[7] + (rotr(a[4], 6) ^ rotr(a[4], 11) ^ rotr(a[4], 25)) + ((a[4] & a[5]) ^ (~a[4] & a[6])) + k[i] + w[i];
      const uint32_t t2 =
          (rotr(a[0], 2) ^ rotr(a[0], 13) ^ rotr(a[0], 22)) + ((a[0] & a[1]) ^ (a[0] & a[2]) ^ (a[1] & a[2]));
      for (int j = 7; j > 0; --j) a[j] = a[j - 1];
      a[4] += t1;
      a[0] = t1 + t2;
    }
    for (int i = 0; i < 8; ++i) h[i] += a[i];
  }
  std::string hex;
  char buf[9];
  for (uint32_t v : h) {
    std::snprintf(buf, sizeof buf, "%08x", v);
    hex += buf;
  }
  return hex;
}

std::string golden_file() { return std::string(OCTET_SOURCE_ROOT) + "/tests/data/bnb-0.49.2.safetensors"; }

// The SHA-256 tests/data/README.md gives for the file.
const char* const kGoldenSha256 = "bb5a0e1fa659d990b3863a84bc36adec3ad6ac477091a1bc6dd8cf0aac7d0a30";

namespace {
// The file's bytes after checking them: an Error names the path and what is wrong.
std::vector<char> checked_golden_bytes() {
  const std::string path = golden_file();
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw Error("golden file " + path + " is missing: it ships with the repository (git checkout tests/data)");
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string got = sha256(bytes.data(), bytes.size());
  if (got != kGoldenSha256)
    throw Error("golden file " + path + " is corrupt: SHA-256 " + got + ", expected " + kGoldenSha256 +
                " (tests/data/README.md); restore it with git checkout tests/data");
  return bytes;
}
}  // namespace

const TensorMap& golden() {
  // Thrown errors leave the static uninitialized, so every case that asks reports the problem.
  static const TensorMap m = [] {
    (void)checked_golden_bytes();
    return load_safetensors(golden_file());
  }();
  return m;
}

const Tensor& golden(const std::string& name) {
  auto it = golden().find(name);
  if (it == golden().end()) throw Error("golden tensor '" + name + "' is missing from " + golden_file());
  return it->second;
}

Tensor poisoned(const Shape& shape, DType dtype, Device device) {
  Tensor host = Tensor::empty(shape, dtype, Device::cpu());
  if (host.nbytes()) std::memset(host.data(), 0xFF, host.nbytes());
  return host.to(device);
}

bool large_enabled() {
  static const bool v = [] {
    const char* env = std::getenv("OCTET_LARGE");
    return env != nullptr && std::string(env) == "1";
  }();
  return v;
}

Tensor view(const Tensor& t, int64_t offset, int64_t len) {
  return t.detach().reshape({-1}).narrow(0, offset, len);  // narrow checks the bounds
}

std::vector<double> values(const Tensor& t) { return t.to_vector<double>(); }

double max_abs_diff(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape()) return NAN;
  const auto x = values(a), y = values(b);
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::isnan(x[i]) != std::isnan(y[i])) return NAN;
    if (std::isnan(x[i])) continue;
    m = std::max(m, std::fabs(x[i] - y[i]));
  }
  return m;
}

double mean_abs_diff(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape()) return NAN;
  const auto x = values(a), y = values(b);
  double s = 0;
  for (size_t i = 0; i < x.size(); ++i) s += std::fabs(x[i] - y[i]);
  return x.empty() ? 0.0 : s / static_cast<double>(x.size());
}

double rel_error(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape()) return NAN;
  const auto x = values(a), y = values(b);
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    num += (x[i] - y[i]) * (x[i] - y[i]);
    den += y[i] * y[i];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  const Tensor x = a.to(Device::cpu()), y = b.to(Device::cpu());
  return x.nbytes() == 0 || std::memcmp(x.data(), y.data(), x.nbytes()) == 0;
}

}  // namespace octet::test
