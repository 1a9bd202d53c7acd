// Test helpers (helpers.hpp).
#include "tests/helpers.hpp"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "octet_build_config.h"

namespace octet::test {

bool has_gpu() {
  static const bool v = cuda_device_count() > 0;
  return v;
}

std::string golden_file() {
  static const std::string path = [] {
    std::vector<std::string> dirs;
    if (const char* env = std::getenv("OCTET_GOLDEN")) dirs.emplace_back(env);
    dirs.emplace_back(std::string(OCTET_SOURCE_ROOT) + "/../shared/golden");
    dirs.emplace_back(std::string(OCTET_SOURCE_ROOT) + "/.deps/golden");  // carried to GPU machines
    for (const auto& d : dirs) {
      const std::string f = d + "/bnb-0.49.2.safetensors";
      if (std::filesystem::exists(f)) return f;
    }
    return std::string();
  }();
  return path;
}

bool golden_available() {
  static const bool v = [] {
    const bool ok = !golden_file().empty();
    if (!ok) std::fprintf(stderr, "golden file bnb-0.49.2.safetensors not found: golden tests are skipped\n");
    return ok;
  }();
  return v;
}

const TensorMap& golden() {
  static const TensorMap m = load_safetensors(golden_file());
  return m;
}

const Tensor& golden(const std::string& name) {
  auto it = golden().find(name);
  if (it == golden().end()) throw Error("golden tensor '" + name + "' is missing");
  return it->second;
}

Tensor poisoned(const Shape& shape, DType dtype, Device device) {
  Tensor host = Tensor::empty(shape, dtype, Device::cpu());
  if (host.nbytes()) std::memset(host.data(), 0xFF, host.nbytes());
  return host.to(device);
}

bool large_enabled(const char* needs) {
  const char* env = std::getenv("OCTET_LARGE");
  if (env && std::string(env) == "1") return true;
  MESSAGE("not run: set OCTET_LARGE=1 (needs " << needs << ")");
  return false;
}

Tensor view(const Tensor& t, int64_t offset, int64_t len) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = t.impl()->storage;
  impl->dtype = t.dtype();
  impl->shape = {len};
  impl->offset = t.impl()->offset + offset;
  return Tensor(impl);
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
