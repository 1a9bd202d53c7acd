// Tape-based reverse-mode autodiff.
// A thread-local tape records, for each op whose inputs require gradients, a Node with its
// inputs, its output and a backward function. backward(root, grad) replays the nodes reachable
// from root in reverse recording order, accumulates gradients into the leaves' grad(), and frees
// the nodes it consumed (a second backward through them throws). NoGradGuard stops recording.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "octet/tensor.hpp"

namespace octet {

// root must be a scalar unless grad (same shape and dtype as root) is given.
void backward(const Tensor& root, const Tensor& grad = {});

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

// Gradients for each input (an undefined Tensor for an input that gets none).
using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_output)>;

struct Node {
  std::string name;
  std::vector<Tensor> inputs;
  std::weak_ptr<TensorImpl> output;
  BackwardFn backward;
  uint64_t sequence = 0;
  bool consumed = false;
};

// True when grad mode is on and any of the inputs requires grad.
bool needs_grad(const std::vector<Tensor>& inputs);
// Records output = op(inputs) with its backward function (if needs_grad(inputs)); marks output
// as requiring grad.
void record(std::string name, std::vector<Tensor> inputs, Tensor& output, BackwardFn fn);
// Throws octet::Error naming op: for ops without a gradient (codes, argmax) called on inputs
// that require grad while grad mode is on.
void refuse(std::string_view op, const std::vector<Tensor>& inputs);

}  // namespace autograd
}  // namespace octet
