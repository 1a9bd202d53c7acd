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
// Fork/join with a side stream of the device's current stream (no host sync; CUDA-graph
// capturable): fork_side_stream makes the side stream wait for the work issued so far on the
// current stream and returns it; join_side_stream makes the current stream wait for the work
// issued so far on the side stream. The side stream and its events belong to the pair (device,
// current stream), so threads on their own streams never wait for each other (src/runtime.cpp).
cudaStream_t fork_side_stream(Device device);
void join_side_stream(Device device);
cublasHandle_t cublas_handle(Device device);        // bound to the current stream
cublasLtHandle_t cublaslt_handle(Device device);
// 32 MiB workspace for cuBLASLt on the device (allocated once, never freed).
void* cublaslt_workspace(Device device, size_t* bytes);

// Sanitizer aid: with OCTET_SANITIZER_INIT=1 in the environment (tools/gpu-check sets it for its
// initcheck pass), sets `bytes` at p to zero on the device's current stream; otherwise does nothing.
// Called on a GEMM output just before cuBLAS/cuBLASLt writes all of it (beta = 0): initcheck does
// not see cuBLAS's stores (the test_ops initcheck probes), so without this its reports on those
// outputs hide octet's own. The same switch sets the cuBLASLt workspace once when it is created
// (cuBLASLt's split-K reduction reads partial sums stored there).
void sanitizer_preset(void* p, size_t bytes, Device device);

// Throws octet::Error naming op and arg when CUDA says p (the first byte of memory to be wrapped
// as a tensor on `device`) is not memory that device's ops may use: Device::cpu() takes host
// memory (plain, pinned or registered) and managed memory, cuda:N device memory of cuda:N and
// managed memory. Without a GPU on the machine a CPU pointer is taken as it is.
void check_pointer(std::string_view op, std::string_view arg, const void* p, Device device);

// Tensor::from_blob with `op` named in its messages (from_dlpack wraps through it).
Tensor wrap_memory(std::string_view op, void* data, const Shape& shape, DType dtype, Device device,
                   std::function<void(void*)> deleter);

void* device_alloc(size_t bytes, Device device);    // stream-ordered; throws with sizes on OOM
void device_free(void* p, Device device) noexcept;  // stream-ordered

}  // namespace octet::detail
