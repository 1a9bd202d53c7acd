// Internal CUDA runtime helpers: device checks, the device guard, handles, allocation.
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <string_view>

#include "octet/runtime.hpp"
#include "octet/tensor.hpp"

namespace octet::detail {

// Throws octet::Error naming op when `device` is a CUDA device that this machine does not have.
void require_device(std::string_view op, Device device);

// Makes `device` current for the lifetime of the guard (no-op for the CPU).
class DeviceGuard {
 public:
  explicit DeviceGuard(Device device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

cudaStream_t stream(Device device);                 // current stream of a CUDA device
cublasHandle_t cublas_handle(Device device);        // bound to the current stream
cublasLtHandle_t cublaslt_handle(Device device);
// 32 MiB workspace for cuBLASLt on the device (allocated once, never freed).
void* cublaslt_workspace(Device device, size_t* bytes);

void* device_alloc(size_t bytes, Device device);    // stream-ordered; throws with sizes on OOM
void device_free(void* p, Device device) noexcept;  // stream-ordered

}  // namespace octet::detail
