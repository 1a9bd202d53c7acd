// Tape-based reverse-mode autodiff.
// Each op whose inputs require gradients (while grad mode is on) records a Node with its inputs
// and a backward function; the node hangs off the op's output (TensorImpl::grad_fn).
// backward(root, grad) runs the nodes reachable from root in reverse recording order,
// accumulates gradients into the leaves' grad() (across calls, until zero_grad()), and frees
// the nodes it ran: their saved tensors are released and a second backward through them throws.
// Gradients exist for f32, f64, f16 and bf16 tensors only; requires_grad_() on other dtypes
// throws and conversions to them (to(u8), to(f8_e4m3), ...) are not recorded.
// In-place writes (copy_, fill_, axpy_) to a tensor that requires grad throw unless grad mode is
// off (NoGradGuard); a tensor saved for a backward that is changed in place before that backward
// runs makes the backward throw instead of giving a wrong gradient.
// Backward functions run with recording off: no higher-order gradients.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "octet/tensor.hpp"

namespace octet {

// root must be a scalar (one element) unless grad (same shape, dtype and device as root) is given.
void backward(const Tensor& root, const Tensor& grad = {});

// Turns recording off for the current thread while it lives (nests; restores the previous mode).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};
bool grad_enabled();

namespace autograd {

// Gradients for each input (an undefined Tensor for an input that gets none). Each defined
// gradient must have its input's shape and dtype.
using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_output)>;

struct Node {
  std::string name;
  std::vector<Tensor> inputs;
  BackwardFn backward;
  uint64_t sequence = 0;  // recording order (global, increasing): a topological order
  bool consumed = false;  // ran in a backward; inputs and backward are released
  Node() = default;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;
  ~Node();  // releases long chains of nodes without recursion
};

// The dtypes that carry gradients: f32, f64, f16, bf16.
bool differentiable(DType t);
// True when grad mode is on and any of the inputs requires grad.
bool needs_grad(const std::vector<Tensor>& inputs);
// Records output = op(inputs) with its backward function when needs_grad(inputs), and marks
// output as requiring grad. Backward functions must capture what they need as SavedTensor (or
// values), never the inputs themselves.
void record(std::string name, std::vector<Tensor> inputs, Tensor& output, BackwardFn fn);
// Throws octet::Error naming op: for ops without a gradient (codes, argmax) called on inputs
// that require grad while grad mode is on.
void refuse(std::string_view op, const std::vector<Tensor>& inputs);
// Called by in-place writers before they write t (argument `arg` of op): throws when t requires grad and grad mode is
// on, or when t is a read-only import (dlpack.hpp); otherwise counts the write (see SavedTensor).
void mark_inplace(std::string_view op, std::string_view arg, const Tensor& t);

// A tensor a backward function needs: held detached (no graph), with the storage version at
// saving time. get() throws if the storage was written in place since. Saving an undefined
// tensor (an operand whose gradient is not needed) gives an undefined get().
class SavedTensor {
 public:
  SavedTensor() = default;
  SavedTensor(const Tensor& t, const char* op);
  const Tensor& get() const;

 private:
  Tensor tensor_;
  uint64_t version_ = 0;
  const char* op_ = "";
};

}  // namespace autograd
}  // namespace octet
