// CUDA runtime state shared by all ops: one stream per device (the "library stream"; every CUDA
// op is enqueued on the device's current stream, which is the library stream unless the caller
// set one of its own), a stream-ordered memory pool, and cuBLAS handles.
// Ops never synchronize the host; synchronize() is the explicit wait.
// The current stream of a device, seen from one thread: the stream of the thread's innermost
// StreamGuard for that device, else the process-wide one set by set_current_stream, else the
// library stream. So each host thread can run its own work on its own stream (StreamGuard),
// while set_current_stream changes it for every thread without a guard. While a caller's stream is
// current, octet enqueues all of its work for that device there: kernels, copies, cuBLAS calls,
// the stream-ordered allocations (cudaMallocAsync) and frees (cudaFreeAsync) of its own storage; a
// second library stream forked from and joined back to the current stream (events) may run part
// of an op. A free goes on the stream current when the last reference goes. Handing tensors
// between streams is the caller's job, with events (docs/embedding.md): after work on stream A
// that writes or reads a tensor, record an event on A and make stream B wait for it
// (cudaStreamWaitEvent) before octet uses or frees that tensor while B is current.
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
// Makes `stream` (owned by the caller, kept alive by it while the guard lives) the current stream
// of `device` on this thread for the guard's lifetime, then restores what this thread had before.
// Other threads are not affected. Guards nest (destroy them in reverse order, on their thread). On
// the CPU the guard does nothing; a CUDA device that does not exist here is an octet::Error. The
// guard orders nothing between the two streams: see the contract above.
class StreamGuard {
 public:
  StreamGuard(Device device, cudaStream_t stream);
  ~StreamGuard();
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  Device device_;
  cudaStream_t previous_ = nullptr;  // the caller stream that was set, nullptr for the library's own
};

// Waits until all work enqueued on the device's current stream has finished (no-op on CPU).
void synchronize(Device device);

struct MemoryStats {
  size_t reserved = 0;  // bytes the pool holds from the driver
  size_t used = 0;      // bytes handed out to live tensors
};
MemoryStats memory_stats(int device_index = 0);

}  // namespace octet
