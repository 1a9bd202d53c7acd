// Per-device CUDA state: library streams, the stream-ordered memory pool, cuBLAS/cuBLASLt
// handles and workspace. Lazily created, guarded by one mutex, never destroyed (process exit
// tears the context down; destroying handles in static destructors races the CUDA runtime).
// Threads: the current stream is the thread's StreamGuard stream when it has one, else the
// process-wide one (set_current_stream, else the library's own). A cuBLAS handle is bound to one
// stream at a time, so each thread uses handles of its own (taken from a pool, given back when
// the thread ends); the cuBLASLt workspace is per stream, so GEMMs on two streams never share one.
#include <array>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "src/cuda_check.hpp"
#include "src/runtime_internal.hpp"

namespace octet {
namespace {

constexpr int kMaxDevices = 64;

struct DeviceState {
  cudaStream_t own_stream = nullptr;
  cudaStream_t user_stream = nullptr;
  cublasLtHandle_t cublaslt = nullptr;
  bool pool_ready = false;
};

std::mutex g_mutex;
std::array<DeviceState, kMaxDevices> g_state;
// cuBLAS handles of ended threads, per device, for the next threads (under g_mutex).
std::array<std::vector<cublasHandle_t>, kMaxDevices> g_spare_cublas;
// cuBLASLt workspaces by (device, stream) (under g_mutex).
std::map<std::pair<int, cudaStream_t>, void*> g_lt_workspaces;

// The streams this thread's StreamGuards made current (nullptr: none), per device.
thread_local std::array<cudaStream_t, kMaxDevices> t_guarded{};

// This thread's cuBLAS handles; they go back to g_spare_cublas when the thread ends.
struct ThreadHandles {
  std::array<cublasHandle_t, kMaxDevices> cublas{};
  ~ThreadHandles() {
    std::lock_guard lock(g_mutex);
    for (size_t i = 0; i < cublas.size(); ++i)
      if (cublas[i]) g_spare_cublas[i].push_back(cublas[i]);
  }
};
thread_local ThreadHandles t_handles;

DeviceState& state(int index) { return g_state[static_cast<size_t>(index)]; }

void check_index(std::string_view op, int index) {
  int n = cuda_device_count();
  if (n == 0) fail(op, "no CUDA device is available on this machine (cuda_device_count() == 0)");
  if (index < 0 || index >= n || index >= kMaxDevices)
    fail_arg(op, "device", cat("cuda:0 .. cuda:", n - 1), cat("cuda:", index));
}

// Caller holds g_mutex and has the device current.
void ensure_pool(int index) {
  DeviceState& s = state(index);
  if (s.pool_ready) return;
  cudaMemPool_t pool;
  OCTET_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, index));
  uint64_t threshold = UINT64_MAX;  // keep freed memory in the pool: frees never synchronize
  OCTET_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
  s.pool_ready = true;
}

// The current stream without creating the library's own (nullptr when it does not exist yet).
cudaStream_t existing_stream_locked(int index) {
  if (cudaStream_t guarded = t_guarded[static_cast<size_t>(index)]) return guarded;
  const DeviceState& s = state(index);
  return s.user_stream ? s.user_stream : s.own_stream;
}

cudaStream_t stream_locked(int index) {
  if (cudaStream_t guarded = t_guarded[static_cast<size_t>(index)]) return guarded;
  DeviceState& s = state(index);
  if (s.user_stream) return s.user_stream;
  if (!s.own_stream) OCTET_CUDA_CHECK(cudaStreamCreateWithFlags(&s.own_stream, cudaStreamNonBlocking));
  return s.own_stream;
}

}  // namespace

cudaStream_t current_stream(int device_index) {
  check_index("current_stream", device_index);
  detail::DeviceGuard guard(Device::cuda(device_index));
  std::lock_guard lock(g_mutex);
  return stream_locked(device_index);
}

void set_current_stream(int device_index, cudaStream_t stream) {
  check_index("set_current_stream", device_index);
  std::lock_guard lock(g_mutex);
  state(device_index).user_stream = stream;
}

StreamGuard::StreamGuard(Device device, cudaStream_t stream) : device_(device) {
  if (!device.is_cuda()) return;
  check_index("StreamGuard", device.index);
  cudaStream_t& guarded = t_guarded[static_cast<size_t>(device.index)];
  previous_ = guarded;
  guarded = stream;
}

StreamGuard::~StreamGuard() {
  if (!device_.is_cuda()) return;
  t_guarded[static_cast<size_t>(device_.index)] = previous_;
}

void synchronize(Device device) {
  if (device.is_cpu()) return;
  check_index("synchronize", device.index);
  detail::refuse_in_capture("synchronize", device, "waits for the stream");
  OCTET_CUDA_CHECK(cudaStreamSynchronize(current_stream(device.index)));
}

MemoryStats memory_stats(int device_index) {
  check_index("memory_stats", device_index);
  cudaMemPool_t pool;
  OCTET_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device_index));
  uint64_t reserved = 0, used = 0;
  OCTET_CUDA_CHECK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &reserved));
  OCTET_CUDA_CHECK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, &used));
  return {static_cast<size_t>(reserved), static_cast<size_t>(used)};
}

namespace detail {

void require_device(std::string_view op, Device device) {
  if (device.is_cuda()) check_index(op, device.index);
}

DeviceGuard::DeviceGuard(Device device) {
  if (!device.is_cuda()) return;
  int current = 0;
  OCTET_CUDA_CHECK(cudaGetDevice(&current));
  if (current != device.index) {
    OCTET_CUDA_CHECK(cudaSetDevice(device.index));
    previous_ = current;
  }
}

DeviceGuard::~DeviceGuard() {
  if (previous_ >= 0) (void)cudaSetDevice(previous_);
}

cudaStream_t stream(Device device) { return current_stream(device.index); }

namespace {

// The side stream and its fork/join events belong to the pair (device, current stream) of the
// fork: work issued on different current streams (host threads on streams of their own) forks onto
// different side streams and never waits for another's side work. Callers that share a current
// stream share its side stream and events, which is safe: their work is ordered on those two
// streams anyway, every record of the events lands on them, and a wait takes the latest record,
// never an earlier one, so it covers at least the work it was asked to (CUDA's event calls are
// thread-safe). One side stream per device would make threads on different streams queue their
// side work behind each other's and join on each other's.
// Entries are never destroyed (as the handles above); a stream destroyed and created again at the
// same address reuses its entry, which is harmless.
struct SideStream {
  cudaStream_t stream = nullptr;
  cudaEvent_t fork = nullptr, join = nullptr;
};

// Caller has the device current.
const SideStream& side_stream(int index, cudaStream_t main) {
  static auto* sides = new std::map<std::pair<int, cudaStream_t>, SideStream>();
  std::lock_guard lock(g_mutex);
  SideStream& s = (*sides)[{index, main}];
  if (!s.stream) {
    OCTET_CUDA_CHECK(cudaEventCreateWithFlags(&s.fork, cudaEventDisableTiming));
    OCTET_CUDA_CHECK(cudaEventCreateWithFlags(&s.join, cudaEventDisableTiming));
    OCTET_CUDA_CHECK(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
  }
  return s;
}

}  // namespace

cudaStream_t fork_side_stream(Device device) {
  const cudaStream_t main = stream(device);
  DeviceGuard guard(device);
  const SideStream& side = side_stream(device.index, main);
  OCTET_CUDA_CHECK(cudaEventRecord(side.fork, main));
  OCTET_CUDA_CHECK(cudaStreamWaitEvent(side.stream, side.fork, 0));
  return side.stream;
}

void join_side_stream(Device device) {
  const cudaStream_t main = stream(device);
  DeviceGuard guard(device);
  const SideStream& side = side_stream(device.index, main);
  OCTET_CUDA_CHECK(cudaEventRecord(side.join, side.stream));
  OCTET_CUDA_CHECK(cudaStreamWaitEvent(main, side.join, 0));
}

namespace {
bool sanitizer_init() {
  static const bool on = [] {
    const char* e = std::getenv("OCTET_SANITIZER_INIT");
    return e && e[0] == '1';
  }();
  return on;
}
}  // namespace

void sanitizer_preset(void* p, size_t bytes, Device device) {
  if (sanitizer_init() && bytes > 0) OCTET_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, stream(device)));
}

cublasHandle_t cublas_handle(Device device) {
  check_index("cublas_handle", device.index);
  DeviceGuard guard(device);
  cublasHandle_t& handle = t_handles.cublas[static_cast<size_t>(device.index)];
  cudaStream_t stream;
  {
    std::lock_guard lock(g_mutex);
    std::vector<cublasHandle_t>& spare = g_spare_cublas[static_cast<size_t>(device.index)];
    if (!handle && !spare.empty()) {
      handle = spare.back();
      spare.pop_back();
    }
    stream = stream_locked(device.index);
  }
  if (!handle) {
    refuse_in_capture("cuBLAS", device, "creates its handle on first use (warm up: run the work once eagerly first)",
                      stream);
    OCTET_CUBLAS_CHECK(cublasCreate(&handle));
    // Default math mode: no TF32, so f32 GEMMs are true f32 baselines.
    OCTET_CUBLAS_CHECK(cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH));
  }
  OCTET_CUBLAS_CHECK(cublasSetStream(handle, stream));
  return handle;
}

cublasLtHandle_t cublaslt_handle(Device device) {
  check_index("cublaslt_handle", device.index);
  DeviceGuard guard(device);
  std::lock_guard lock(g_mutex);
  DeviceState& s = state(device.index);
  if (!s.cublaslt) {
    refuse_in_capture("cuBLASLt", device, "creates its handle on first use (warm up: run the work once eagerly first)",
                      stream_locked(device.index));
    OCTET_CUBLAS_CHECK(cublasLtCreate(&s.cublaslt));
  }
  return s.cublaslt;
}

void* cublaslt_workspace(Device device, size_t* bytes) {
  constexpr size_t kBytes = 32u << 20;
  check_index("cublaslt_workspace", device.index);
  DeviceGuard guard(device);
  std::lock_guard lock(g_mutex);
  void*& workspace = g_lt_workspaces[{device.index, stream_locked(device.index)}];
  if (!workspace) {
    refuse_in_capture("cuBLASLt", device,
                      "allocates a workspace for each stream on first use (warm up: run the work once eagerly first)",
                      stream_locked(device.index));
    OCTET_CUDA_CHECK(cudaMalloc(&workspace, kBytes));
    // cuBLASLt's split-K reduction reads partial sums its GEMM kernel stored in the workspace,
    // stores initcheck does not see (as for GEMM outputs): set it once under the sanitizer.
    if (sanitizer_init()) OCTET_CUDA_CHECK(cudaMemset(workspace, 0, kBytes));
  }
  *bytes = kBytes;
  return workspace;
}

void check_pointer(std::string_view op, std::string_view arg, const void* p, Device device) {
  if (device.is_cpu() && cuda_device_count() == 0) return;  // nothing but host memory exists here
  cudaPointerAttributes attributes{};
  const cudaError_t e = cudaPointerGetAttributes(&attributes, p);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    fail_arg(op, arg, cat("memory of ", device.str()),
             cat("a pointer CUDA cannot classify (cudaPointerGetAttributes: ", cudaGetErrorString(e), ")"));
  }
  const char* what = "";
  switch (attributes.type) {
    case cudaMemoryTypeManaged: return;  // reachable from the host and every device
    case cudaMemoryTypeUnregistered: what = "host memory"; break;
    case cudaMemoryTypeHost: what = "pinned host memory"; break;
    case cudaMemoryTypeDevice: what = "device memory"; break;
    default: what = "memory of an unknown kind"; break;
  }
  const bool on_device = attributes.type == cudaMemoryTypeDevice;
  if (device.is_cpu() && !on_device) return;
  if (device.is_cuda() && on_device && attributes.device == device.index) return;
  const std::string expected = device.is_cpu() ? "host or managed memory (the tensor is on cpu)"
                                               : cat("device or managed memory of ", device.str());
  fail_arg(op, arg, expected, on_device ? cat(what, " of cuda:", attributes.device) : std::string(what));
}

void* device_alloc(size_t bytes, Device device) {
  check_index("Tensor allocation", device.index);
  DeviceGuard guard(device);
  cudaStream_t s;
  {
    std::lock_guard lock(g_mutex);
    ensure_pool(device.index);
    s = stream_locked(device.index);
  }
  void* p = nullptr;
  cudaError_t e = cudaMallocAsync(&p, bytes, s);
  if (e == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    (void)cudaMemGetInfo(&free_b, &total_b);
    MemoryStats st = memory_stats(device.index);
    throw Error(cat("out of memory on ", device.str(), ": asked for ", bytes, " bytes; the device has ",
                    free_b, " bytes free of ", total_b, "; the pool holds ", st.reserved,
                    " bytes of which ", st.used, " are in use"));
  }
  OCTET_CUDA_CHECK(e);
  note_allocation(p, device, s);
  return p;
}

void device_free(void* p, Device device) noexcept {
  if (!p) return;
  int current = -1;
  if (cudaGetDevice(&current) != cudaSuccess) return;
  if (current != device.index) (void)cudaSetDevice(device.index);
  cudaStream_t s = nullptr;
  {
    std::lock_guard lock(g_mutex);
    s = existing_stream_locked(device.index);
  }
  if (!graph_takes_free(p, device, s) && cudaFreeAsync(p, s) != cudaSuccess)
    (void)cudaGetLastError();  // at exit the runtime may be gone
  if (current != device.index) (void)cudaSetDevice(current);
}

}  // namespace detail
}  // namespace octet
