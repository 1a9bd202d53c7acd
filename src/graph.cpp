// octet::Graph (graph.hpp): stream capture on the device's current stream, instantiation with
// cudaGraphInstantiateFlagAutoFreeOnLaunch, replay; and the bookkeeping of storage freed while a
// capture is in progress or after it (runtime_internal.hpp's graph hooks, called by device_free
// and device_alloc), so that every tensor handle stays valid and no memory a graph reads is freed
// while the graph lives.
//
// Storage kinds, by when it was allocated and dropped (the last reference to it went):
//  - allocated and dropped during the capture: the free is captured (a graph free node).
//  - allocated during the capture and kept (an output): graph memory at an address fixed for the
//    graph's life. capture() launches the graph once, so it is mapped when capture() returns; each
//    replay frees and reallocates it (auto free on launch). Dropped after the capture, it is freed
//    like any storage, but a later replay allocates it again: the Graph frees those when destroyed.
//  - allocated before the capture and dropped during it: the graph may read it (a gradient that
//    backward replaced), so it is kept until the Graph is destroyed.
//  - allocated during a capture that was abandoned (work threw): the address was never mapped;
//    dropping it frees nothing.
#include "octet/graph.hpp"

#include <atomic>
#include <map>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "octet/error.hpp"
#include "src/cuda_check.hpp"
#include "src/runtime_internal.hpp"

namespace octet {

struct Graph::Impl {
  Device device;
  std::function<void()> work;  // the CPU's "graph"
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  bool launched = false;    // its outputs are mapped (capture's first launch was enqueued)
  std::vector<void*> kept;  // storage from before the capture that the graph may read
  // Outputs dropped after the capture: true once a replay has allocated them again.
  std::unordered_map<void*, bool> dropped_outputs;
  ~Impl();
};

namespace {

struct Capture {
  cudaStream_t stream = nullptr;
  std::unordered_set<void*> allocated;  // graph memory no tensor has dropped yet
  std::vector<void*> released;          // storage from before the capture dropped during it
};

struct Registry {
  std::mutex mutex;                                // guards the members below
  std::map<int, Capture*> active;                  // captures in progress, by device index
  std::unordered_set<void*> orphans;               // graph memory of abandoned captures
  std::unordered_map<void*, Graph::Impl*> outputs;  // outputs of live graphs still referenced
};
// Never destroyed: tensors (static ones included) may be freed while the process exits.
Registry& reg() {
  static auto* registry = new Registry();
  return *registry;
}
// True while any of the registry's maps is non-empty, so that device_alloc and device_free skip
// the lock when no capture or graph is around.
std::atomic<bool> g_watching{false};

void update_watching() { g_watching = !reg().active.empty() || !reg().orphans.empty() || !reg().outputs.empty(); }

void free_on_stream(void* p, cudaStream_t s) {
  if (cudaFreeAsync(p, s) != cudaSuccess) (void)cudaGetLastError();  // at exit the runtime may be gone
}

// Ends a capture that will not be used: nothing it recorded runs, its graph memory was never
// mapped, and the storage it released goes back now (only earlier eager work used it).
void abandon(Capture& capture, Device device) {
  cudaGraph_t graph = nullptr;
  if (cudaStreamEndCapture(capture.stream, &graph) != cudaSuccess) (void)cudaGetLastError();
  if (graph) (void)cudaGraphDestroy(graph);
  std::vector<void*> released;
  {
    std::lock_guard lock(reg().mutex);
    reg().active.erase(device.index);
    for (void* p : capture.allocated) reg().orphans.insert(p);
    released.swap(capture.released);
    update_watching();
  }
  for (void* p : released) free_on_stream(p, capture.stream);
}

}  // namespace

namespace detail {

void note_allocation(void* p, Device device, cudaStream_t stream) {
  if (!g_watching.load()) return;
  std::lock_guard lock(reg().mutex);
  const auto active = reg().active.find(device.index);
  if (active != reg().active.end() && active->second->stream == stream) active->second->allocated.insert(p);
}

bool graph_takes_free(void* p, Device device, cudaStream_t stream) noexcept {
  if (!g_watching.load()) return false;
  try {
    std::lock_guard lock(reg().mutex);
    if (reg().orphans.erase(p)) {
      update_watching();
      return true;
    }
    const auto active = reg().active.find(device.index);
    if (active != reg().active.end() && active->second->stream == stream) {
      if (active->second->allocated.erase(p)) return false;  // captured as a free node
      active->second->released.push_back(p);
      reg().outputs.erase(p);  // an earlier graph's output: the new graph keeps it now
      return true;
    }
    const auto output = reg().outputs.find(p);
    if (output != reg().outputs.end()) {
      output->second->dropped_outputs[p] = false;
      reg().outputs.erase(output);
      update_watching();
    }
  } catch (...) {
    // Out of host memory: leave the free to CUDA as if no graph were around.
  }
  return false;
}

void refuse_in_capture(std::string_view op, Device device, std::string_view what, cudaStream_t stream) {
  if (!device.is_cuda()) return;
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  OCTET_CUDA_CHECK(cudaStreamIsCapturing(stream, &status));
  if (status == cudaStreamCaptureStatusNone) return;
  fail(op, cat(what, ", which a CUDA graph cannot contain, while ", device.str(),
               "'s current stream is being captured (a capture is in progress: Graph::capture)"));
}

void refuse_in_capture(std::string_view op, Device device, std::string_view what) {
  if (device.is_cuda()) refuse_in_capture(op, device, what, stream(device));
}

}  // namespace detail

bool capturing(Device device) {
  if (!device.is_cuda()) return false;
  detail::require_device("capturing", device);
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  OCTET_CUDA_CHECK(cudaStreamIsCapturing(detail::stream(device), &status));
  return status != cudaStreamCaptureStatusNone;
}

Graph::Graph(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Graph::Graph(Graph&&) noexcept = default;
Graph& Graph::operator=(Graph&&) noexcept = default;
Graph::~Graph() = default;

Graph::Impl::~Impl() {
  if (!device.is_cuda() || (!graph && kept.empty())) return;  // nothing captured
  {
    std::lock_guard lock(reg().mutex);
    for (auto it = reg().outputs.begin(); it != reg().outputs.end();) {
      if (it->second != this) {
        ++it;
        continue;
      }
      if (!launched) reg().orphans.insert(it->first);  // never mapped: dropping them frees nothing
      it = reg().outputs.erase(it);  // otherwise their tensors free them
    }
    update_watching();
  }
  std::vector<void*> to_free = std::move(kept);
  for (const auto& [p, reallocated] : dropped_outputs)
    if (reallocated) to_free.push_back(p);
  cudaStream_t s = nullptr;
  std::optional<detail::DeviceGuard> guard;
  try {
    guard.emplace(device);
    s = detail::stream(device);
  } catch (...) {
    return;  // no runtime left (process exit): the driver reclaims everything
  }
  if (exec) (void)cudaGraphExecDestroy(exec);  // a launch in flight completes first
  if (graph) (void)cudaGraphDestroy(graph);
  for (void* p : to_free) free_on_stream(p, s);
}

Graph Graph::capture(Device device, std::function<void()> work) {
  if (!work) fail_arg("Graph::capture", "work", "a callable", "an empty std::function");
  auto impl = std::make_unique<Impl>();
  impl->device = device;
  if (device.is_cpu()) {
    work();
    impl->work = std::move(work);
    return Graph(std::move(impl));
  }
  detail::require_device("Graph::capture", device);
  detail::DeviceGuard guard(device);
  const cudaStream_t s = detail::stream(device);
  detail::refuse_in_capture("Graph::capture", device, "starts a capture (captures do not nest)", s);
  Capture capture;
  capture.stream = s;
  {
    std::lock_guard lock(reg().mutex);
    if (reg().active.count(device.index))
      fail("Graph::capture", cat("a capture is already in progress on ", device.str(), " (captures do not nest)"));
    reg().active[device.index] = &capture;
    update_watching();
  }
  // Thread-local mode: this thread may not call CUDA's unsafe APIs (cudaMalloc, synchronous
  // copies) meanwhile; other threads may.
  const cudaError_t begun = cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
  if (begun != cudaSuccess) {
    {
      std::lock_guard lock(reg().mutex);
      reg().active.erase(device.index);
      update_watching();
    }
    OCTET_CUDA_CHECK(begun);
  }
  try {
    work();
    // Work enqueued on another stream after a switch would run eagerly, outside the graph.
    if (detail::stream(device) != s)
      fail("Graph::capture", cat("the work changed ", device.str(),
                                 "'s current stream (set_current_stream or a StreamGuard left alive); restore it "
                                 "before the work returns"));
  } catch (...) {
    abandon(capture, device);
    throw;
  }
  const cudaError_t ended = cudaStreamEndCapture(s, &impl->graph);
  {
    std::lock_guard lock(reg().mutex);
    reg().active.erase(device.index);
    if (ended == cudaSuccess)
      for (void* p : capture.allocated) reg().outputs[p] = impl.get();
    else
      for (void* p : capture.allocated) reg().orphans.insert(p);
    update_watching();
  }
  impl->kept = std::move(capture.released);  // freed by ~Impl, also when the steps below throw
  if (ended != cudaSuccess) {
    (void)cudaGetLastError();
    fail("Graph::capture",
         cat("the capture on ", device.str(), " failed (", cudaGetErrorString(ended),
             "): something in the work called CUDA in a way a capture cannot contain (a synchronous copy, "
             "cudaMalloc, a wait, or work from another stream not joined back); octet's own ops refuse "
             "those by name, so look for direct CUDA calls or a first use to warm up eagerly before capturing"));
  }
  OCTET_CUDA_CHECK(cudaGraphInstantiateWithFlags(&impl->exec, impl->graph, cudaGraphInstantiateFlagAutoFreeOnLaunch));
  OCTET_CUDA_CHECK(cudaGraphLaunch(impl->exec, s));
  impl->launched = true;
  return Graph(std::move(impl));
}

void Graph::replay() {
  if (!impl_) fail_arg("Graph::replay", "self", "a captured graph", "a moved-from Graph");
  if (impl_->device.is_cpu()) {
    impl_->work();
    return;
  }
  detail::DeviceGuard guard(impl_->device);
  const cudaStream_t s = detail::stream(impl_->device);
  detail::refuse_in_capture("Graph::replay", impl_->device, "launches a graph", s);
  OCTET_CUDA_CHECK(cudaGraphLaunch(impl_->exec, s));
  std::lock_guard lock(reg().mutex);
  for (auto& [p, reallocated] : impl_->dropped_outputs) reallocated = true;
}

Device Graph::device() const {
  if (!impl_) fail_arg("Graph::device", "self", "a captured graph", "a moved-from Graph");
  return impl_->device;
}

size_t Graph::nodes() const {
  if (!impl_) fail_arg("Graph::nodes", "self", "a captured graph", "a moved-from Graph");
  if (!impl_->graph) return 0;
  size_t count = 0;
  OCTET_CUDA_CHECK(cudaGraphGetNodes(impl_->graph, nullptr, &count));
  return count;
}

}  // namespace octet
