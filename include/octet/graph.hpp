// CUDA graphs: capture the work octet enqueues on a device's current stream (a forward, backward,
// an optimizer step, sgd_step, clipping) once, then replay it with one launch.
//
// Graph::capture(device, work) calls work() once. On a CUDA device it records every launch,
// copy, allocation and free that octet enqueues on current_stream(device) meanwhile (thread-local
// capture mode: other host threads stay free to use CUDA), instantiates the graph and launches it
// once, so that on return the work has run exactly once, as on the CPU. replay() launches the same
// graph again on the device's current stream; nothing on the host runs. On the CPU capture runs
// work() and replay() runs it again, so code written for both devices behaves the same.
//
// What a replay repeats: the kernels with the pointers and values they had during the capture.
// New inputs go into the captured tensors' storage (copy_ or a cudaMemcpyAsync on the stream
// before replay()); outputs created during the capture (a loss, gradients) keep their storage
// and hold the latest replay's values. Host-side state is not replayed: autograd's tape, host
// counters, anything a host branch decided during capture stays as it was.
//
// Inside work, on a CUDA device:
//  - allowed: every op, backward, optimizer and clipping steps, copy_ between device tensors,
//    allocating and dropping tensors (stream-ordered: they become the graph's memory nodes).
//  - refused with an octet::Error naming the op and saying a capture is in progress: host reads
//    and waits (item, to_vector, to(cpu), synchronize), copies from the host (from_vector,
//    to(cuda) of a CPU tensor), a nested capture, replay() of a graph, and first uses that would
//    allocate or upload outside the stream (a Code's table on the device, cuBLAS handles and the
//    cuBLASLt workspace). Warm up: run the work once eagerly before capturing it. Work that
//    returns with another stream current (set_current_stream) fails the capture too.
//  If work throws, the capture is abandoned (nothing it enqueued ever runs), the stream is
//  usable again and the exception propagates; tensors work created and left behind have no
//  memory: drop them without reading them.
//
// Memory: tensors created during the capture live in the graph's memory. Those dropped during the
// capture (temporaries, saved tensors released by backward) are freed inside the graph; those
// that outlive it (the loss, gradients) are valid after capture() returns, and each replay frees
// and reallocates them at the same address (instantiated with cudaGraphInstantiateFlagAutoFreeOnLaunch),
// so every tensor handle stays valid. Storage allocated before the capture whose last reference
// goes during it (a gradient replaced by backward) may still be read by the graph: the Graph keeps
// it and frees it when destroyed. Tensors allocated before the capture that the work reads or
// writes (parameters, inputs, optimizer states) must stay alive while the graph is replayed.
// A Graph is movable, not copyable; destroy it on the stream it was replayed on.
#pragma once
#include <functional>
#include <memory>

#include "octet/device.hpp"

namespace octet {

class Graph {
 public:
  // Captures work on `device` (see above) and runs it once. A CUDA device that does not exist,
  // a capture already in progress on the device's current stream, or a failed capture
  // (an Error naming what broke it) throw.
  static Graph capture(Device device, std::function<void()> work);

  // Runs the captured work again: on CUDA one graph launch on current_stream(device()), on the
  // CPU a call of work. Throws for a moved-from Graph and while a capture is in progress.
  void replay();

  Device device() const;
  // Nodes of the captured graph (kernels, copies, memory nodes); 0 on the CPU.
  size_t nodes() const;

  Graph(Graph&&) noexcept;
  Graph& operator=(Graph&&) noexcept;
  ~Graph();

  struct Impl;

 private:
  explicit Graph(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// True while device's current stream is being captured (always false on the CPU).
bool capturing(Device device);

}  // namespace octet
