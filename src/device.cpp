// Device names and GPU discovery.
#include "octet/device.hpp"

#include <cuda_runtime_api.h>

#include "octet/error.hpp"

namespace octet {

Device Device::parse(const std::string& name) {
  if (name == "cpu") return cpu();
  if (name == "cuda" || name == "gpu") return cuda(0);
  if (name.rfind("cuda:", 0) == 0 && name.size() > 5) {
    int index = 0;
    for (char c : name.substr(5)) {
      if (c < '0' || c > '9') fail_arg("Device::parse", "name", "cpu, cuda or cuda:N", name);
      index = index * 10 + (c - '0');
      if (index > 1023) fail_arg("Device::parse", "name", "a device index below 1024", name);
    }
    return cuda(index);
  }
  fail_arg("Device::parse", "name", "cpu, cuda or cuda:N", name);
}

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index);
}

int cuda_device_count() noexcept {
  static const int count = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      (void)cudaGetLastError();
      return 0;
    }
    return n;
  }();
  return count;
}

Device default_device() noexcept { return cuda_available() ? Device::cuda(0) : Device::cpu(); }

}  // namespace octet
