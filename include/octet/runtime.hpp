// CUDA runtime state shared by all ops: one stream per device (the "library stream"; every CUDA
// op is enqueued on it), a stream-ordered memory pool, and cuBLAS handles.
// Ops never synchronize the host; synchronize() is the explicit wait.
#pragma once
#include <cstddef>
#include <cuda_runtime_api.h>

#include "octet/device.hpp"

namespace octet {

// The stream ops on cuda:index are enqueued on. Created non-blocking on first use.
cudaStream_t current_stream(int device_index = 0);
// Makes ops on cuda:index use `stream` (owned by the caller) from now on; nullptr restores the
// library's own stream.
void set_current_stream(int device_index, cudaStream_t stream);
// Waits until all work enqueued on the device's current stream has finished (no-op on CPU).
void synchronize(Device device);

struct MemoryStats {
  size_t reserved = 0;  // bytes the pool holds from the driver
  size_t used = 0;      // bytes handed out to live tensors
};
MemoryStats memory_stats(int device_index = 0);

}  // namespace octet
