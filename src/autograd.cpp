// The autograd engine: recording (record/needs_grad/refuse), backward, NoGradGuard.
// The tape is the graph of Nodes hanging off outputs' grad_fn; recording order (a per-thread
// sequence number) is a valid topological order, so backward runs the reachable nodes by
// decreasing sequence. Backward functions run with recording off (no higher-order gradients).
#include "octet/autograd.hpp"

#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include "octet/ops.hpp"
#include "src/check.hpp"

namespace octet {
namespace {
thread_local bool t_grad_enabled = true;
thread_local uint64_t t_sequence = 0;
}  // namespace

bool grad_enabled() { return t_grad_enabled; }

NoGradGuard::NoGradGuard() : previous_(t_grad_enabled) { t_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { t_grad_enabled = previous_; }

namespace autograd {

bool needs_grad(const std::vector<Tensor>& inputs) {
  if (!t_grad_enabled) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

void record(std::string name, std::vector<Tensor> inputs, Tensor& output, BackwardFn fn) {
  if (!needs_grad(inputs)) return;
  auto node = std::make_shared<Node>();
  node->name = std::move(name);
  node->inputs = std::move(inputs);
  node->output = output.impl_ptr();
  node->backward = std::move(fn);
  node->sequence = ++t_sequence;
  output.impl()->grad_fn = std::move(node);
  output.impl()->requires_grad = true;
}

void refuse(std::string_view op, const std::vector<Tensor>& inputs) {
  if (needs_grad(inputs))
    fail(op, "has no gradient, but an input requires grad; call it on detach()ed inputs or under NoGradGuard");
}

}  // namespace autograd

namespace {

void accumulate(Tensor& slot, const Tensor& g) { slot = slot.defined() ? add(slot, g) : g; }

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

  // Nodes reachable from the root.
  std::vector<std::shared_ptr<autograd::Node>> nodes;
  std::unordered_set<autograd::Node*> seen;
  std::vector<std::shared_ptr<autograd::Node>> stack;
  if (root.impl()->grad_fn) stack.push_back(root.impl()->grad_fn);
  while (!stack.empty()) {
    auto node = stack.back();
    stack.pop_back();
    if (!seen.insert(node.get()).second) continue;
    if (node->consumed)
      fail("backward", cat("the graph through '", node->name,
                           "' was already freed by an earlier backward; run the forward again"));
    nodes.push_back(node);
    for (const Tensor& in : node->inputs)
      if (in.defined() && in.impl()->grad_fn) stack.push_back(in.impl()->grad_fn);
  }
  std::sort(nodes.begin(), nodes.end(), [](const auto& a, const auto& b) { return a->sequence > b->sequence; });

  // Gradients flowing into non-leaf tensors are keyed by the node that produced them (a node's
  // output may already be gone once its consumers have freed their inputs); leaves by tensor.
  std::unordered_map<autograd::Node*, Tensor> node_grads;
  std::unordered_map<TensorImpl*, Tensor> leaf_grads;
  std::vector<Tensor> leaves;
  if (root.impl()->grad_fn) {
    node_grads[root.impl()->grad_fn.get()] = seed;
  } else {
    leaves.push_back(root);
    leaf_grads[root.impl()] = seed;
  }
  for (auto& node : nodes) {
    auto it = node_grads.find(node.get());
    if (it != node_grads.end()) {
      const Tensor g = it->second;
      node_grads.erase(it);
      std::vector<Tensor> in_grads = node->backward(g);
      OCTET_CHECK(in_grads.size() == node->inputs.size(), "backward",
                  "node '", node->name, "' returned ", in_grads.size(), " gradients for ", node->inputs.size(), " inputs");
      for (size_t i = 0; i < in_grads.size(); ++i) {
        const Tensor& in = node->inputs[i];
        if (!in.defined() || !in.requires_grad() || !in_grads[i].defined()) continue;
        if (in_grads[i].shape() != in.shape() || in_grads[i].dtype() != in.dtype())
          fail("backward", cat("node '", node->name, "' gave a gradient ", in_grads[i].str(), " for input ", i,
                               " of ", in.str()));
        if (in.impl()->grad_fn) {
          accumulate(node_grads[in.impl()->grad_fn.get()], in_grads[i]);
        } else {
          auto [slot, fresh] = leaf_grads.try_emplace(in.impl());
          if (fresh) leaves.push_back(in);
          accumulate(slot->second, in_grads[i]);
        }
      }
    }
    node->consumed = true;  // free what the node saved
    node->inputs.clear();
    node->backward = nullptr;
  }
  for (Tensor& leaf : leaves) {
    const Tensor& g = leaf_grads[leaf.impl()];
    Tensor existing = leaf.grad();
    leaf.set_grad(existing.defined() ? add(existing, g) : g.clone());
  }
}

}  // namespace octet
