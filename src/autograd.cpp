// The autograd engine: recording (record/needs_grad/refuse), in-place checks, saved tensors,
// backward and NoGradGuard.
// The tape is the graph of Nodes hanging off outputs' grad_fn. The sequence number is global
// and increasing, and a node's inputs exist before it is recorded, so decreasing sequence is a
// reverse topological order even for graphs built on several threads. Gradients of non-leaf
// tensors are keyed by their producing node, gradients of leaves by the leaf.
#include "octet/autograd.hpp"

#include <algorithm>
#include <atomic>
#include <unordered_map>
#include <unordered_set>

#include "octet/ops.hpp"
#include "src/check.hpp"

namespace octet {
namespace {
thread_local bool t_grad_enabled = true;
std::atomic<uint64_t> g_sequence{0};
}  // namespace

bool grad_enabled() { return t_grad_enabled; }

NoGradGuard::NoGradGuard() : previous_(t_grad_enabled) { t_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { t_grad_enabled = previous_; }

namespace autograd {

namespace {
// Moves the grad_fn of inputs that only this list still holds into `out`, then clears the list.
void steal_chain(std::vector<Tensor>& inputs, std::vector<std::shared_ptr<Node>>& out) {
  for (Tensor& t : inputs)
    if (t.defined() && t.impl_ptr().use_count() == 1 && t.impl()->grad_fn) out.push_back(std::move(t.impl()->grad_fn));
  inputs.clear();
}
}  // namespace

Node::~Node() {
  // A chain of 10^5 nodes released recursively (node -> input impl -> grad_fn -> ...) would
  // overflow the stack; unlink it into a worklist instead.
  std::vector<std::shared_ptr<Node>> pending;
  steal_chain(inputs, pending);
  while (!pending.empty()) {
    std::shared_ptr<Node> n = std::move(pending.back());
    pending.pop_back();
    if (n.use_count() == 1) steal_chain(n->inputs, pending);
  }
}

bool differentiable(DType t) { return t == DType::f32 || t == DType::f64 || t == DType::f16 || t == DType::bf16; }

bool needs_grad(const std::vector<Tensor>& inputs) {
  if (!t_grad_enabled) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

void record(std::string name, std::vector<Tensor> inputs, Tensor& output, BackwardFn fn) {
  if (!needs_grad(inputs)) return;
  OCTET_CHECK(differentiable(output.dtype()), name, "cannot record an output of dtype ", dtype_name(output.dtype()));
  auto node = std::make_shared<Node>();
  node->name = std::move(name);
  node->inputs = std::move(inputs);
  node->backward = std::move(fn);
  node->sequence = ++g_sequence;
  output.impl()->grad_fn = std::move(node);
  output.impl()->requires_grad = true;
}

void refuse(std::string_view op, const std::vector<Tensor>& inputs) {
  if (needs_grad(inputs))
    fail(op, "has no gradient, but an input requires grad; call it on detach()ed inputs or under NoGradGuard");
}

void mark_inplace(std::string_view op, std::string_view arg, const Tensor& t) {
  check::writable(op, arg, t);
  if (t_grad_enabled && t.requires_grad())
    fail_arg(op, arg, "a tensor that does not require grad (in-place writes are not recorded; use NoGradGuard)",
             cat(t.str(), " that requires grad"));
  ++t.impl()->storage->version;
}

SavedTensor::SavedTensor(const Tensor& t, const char* op) : op_(op) {
  if (!t.defined()) return;
  tensor_ = t.detach();
  version_ = t.impl()->storage->version;
}

const Tensor& SavedTensor::get() const {
  if (tensor_.defined() && tensor_.impl()->storage->version != version_)
    fail("backward", cat("a tensor ", tensor_.str(), " saved by '", op_,
                         "' was written in place after the forward; its gradient would be wrong"));
  return tensor_;
}

}  // namespace autograd

namespace {

void accumulate(Tensor& slot, const Tensor& g) { slot = slot.defined() ? add(slot, g) : g; }

// The nodes reachable from root, in reverse recording order. Throws if one was freed.
std::vector<std::shared_ptr<autograd::Node>> reachable(const Tensor& root) {
  std::vector<std::shared_ptr<autograd::Node>> nodes, stack;
  std::unordered_set<autograd::Node*> seen;
  if (root.impl()->grad_fn) stack.push_back(root.impl()->grad_fn);
  while (!stack.empty()) {
    auto node = std::move(stack.back());
    stack.pop_back();
    if (!seen.insert(node.get()).second) continue;
    if (node->consumed)
      fail("backward", cat("the graph through '", node->name,
                           "' was already freed by an earlier backward; run the forward again"));
    for (const Tensor& in : node->inputs)
      if (in.defined() && in.impl()->grad_fn) stack.push_back(in.impl()->grad_fn);
    nodes.push_back(std::move(node));
  }
  std::sort(nodes.begin(), nodes.end(), [](const auto& a, const auto& b) { return a->sequence > b->sequence; });
  return nodes;
}

}  // namespace

void backward(const Tensor& root, const Tensor& grad) {
  check::defined("backward", "root", root);
  if (!root.requires_grad())
    fail_arg("backward", "root", "a tensor that requires grad (computed from inputs with requires_grad_())",
             cat(root.str(), " that does not require grad"));
  Tensor seed = grad;
  if (!seed.defined()) {
    if (root.numel() != 1)
      fail_arg("backward", "grad", cat("a seed gradient of shape ", shape_str(root.shape()), " for a non-scalar root"),
               "none");
    seed = Tensor::ones(root.shape(), root.dtype(), root.device());
  } else {
    check::shape_is("backward", "grad", seed, root.shape());
    check::dtype_is("backward", "grad", seed, root.dtype());
    check::device_is("backward", "grad", seed, root.device());
  }
  NoGradGuard no_grad;
  const auto nodes = reachable(root);

  std::unordered_map<autograd::Node*, Tensor> node_grads;
  std::unordered_map<TensorImpl*, Tensor> leaf_grads;
  std::vector<Tensor> leaves;  // in first-reached order, keeps the impls alive
  if (root.impl()->grad_fn) {
    node_grads[root.impl()->grad_fn.get()] = seed;
  } else {
    leaves.push_back(root);
    leaf_grads[root.impl()] = seed;
  }
  for (const auto& node : nodes) {
    auto it = node_grads.find(node.get());
    if (it != node_grads.end()) {  // nodes no gradient reached (unused outputs) only get freed
      const Tensor g = std::move(it->second);
      node_grads.erase(it);
      const std::vector<Tensor> in_grads = node->backward(g);
      OCTET_CHECK(in_grads.size() == node->inputs.size(), "backward", "node '", node->name, "' returned ",
                  in_grads.size(), " gradients for ", node->inputs.size(), " inputs");
      for (size_t i = 0; i < in_grads.size(); ++i) {
        const Tensor& in = node->inputs[i];
        if (!in.defined() || !in.requires_grad() || !in_grads[i].defined()) continue;
        const Tensor& gi = in_grads[i];
        if (gi.shape() != in.shape() || gi.dtype() != in.dtype() || gi.device() != in.device())
          fail("backward", cat("node '", node->name, "' gave a gradient ", gi.str(), " for input ", i, " of ", in.str()));
        if (in.impl()->grad_fn) {
          accumulate(node_grads[in.impl()->grad_fn.get()], gi);
        } else {
          auto [slot, fresh] = leaf_grads.try_emplace(in.impl());
          if (fresh) leaves.push_back(in);
          accumulate(slot->second, gi);
        }
      }
    }
    node->consumed = true;  // release what the node saved
    node->inputs.clear();
    node->backward = nullptr;
  }
  for (Tensor& leaf : leaves) {
    const Tensor& g = leaf_grads[leaf.impl()];
    const Tensor existing = leaf.grad();
    // clone: the gradient may alias the seed or another leaf's gradient (add passes g through);
    // a gradient whose storage nothing else holds (a fresh op output) is taken as it is.
    const bool sole = g.impl_ptr().use_count() == 1 && g.impl()->storage.use_count() == 1;
    leaf.set_grad(existing.defined() ? add(existing, g) : sole ? g : g.clone());
  }
}

}  // namespace octet
