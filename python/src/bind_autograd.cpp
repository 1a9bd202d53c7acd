// octet._octet: octet's own autograd for an outside engine (octet.torch). A *_recorded call runs
// an op on leaves that alias the caller's arrays (requires_grad where asked) and returns the
// output with a Recorded; Recorded.backward(grad) runs octet::backward over that small tape and
// returns the leaves' gradients (None where none was asked). The gradient formulas are the
// library's (fp8_simulated.hpp, nn.hpp); nothing is computed here.
// Layer wraps nn::LinearFP8Mixed / LinearFP8Global / LinearFP8 with weight and bias supplied per
// call (the caller's parameters), so that their settings and the delayed-scaling histories persist.
#include <nanobind/stl/string.h>

#include <memory>
#include <utility>
#include <vector>

#include "octet/autograd.hpp"
#include "octet/nn.hpp"
#include "python/src/binding.hpp"

namespace octet::python {

namespace {

struct Recorded {
  Tensor output;
  std::vector<Tensor> leaves;  // undefined where no gradient was asked
  ArrayLibrary library;
  bool consumed = false;
};

// The array as a fresh leaf (sharing its memory) that requires grad when `need` is true.
Tensor leaf(nb::handle array, bool need, std::string_view op, std::string_view arg) {
  Tensor t = import_optional(array, op, arg);
  if (!t.defined()) return t;
  Tensor l = t.detach();
  if (need) l.requires_grad_();
  return l;
}

nb::tuple recorded(const Tensor& out, std::vector<Tensor> inputs, const std::vector<bool>& needs, const ArrayLibrary& lib) {
  Recorded r{out, {}, lib, false};
  for (size_t i = 0; i < inputs.size(); ++i) r.leaves.push_back(needs[i] ? inputs[i] : Tensor());
  return nb::make_tuple(export_tensor(out.detach(), lib), std::move(r));
}

std::vector<bool> needs_arg(nb::handle needs, size_t n, std::string_view op) {
  std::vector<bool> v;
  for (nb::handle h : needs) v.push_back(nb::cast<bool>(h));
  if (v.size() != n) fail_arg(op, "needs_grad", cat(n, " booleans"), cat(v.size()));
  return v;
}

enum class LayerKind { mixed, global, fp8 };

struct Layer {
  LayerKind kind = LayerKind::mixed;
  std::unique_ptr<nn::Linear> linear;  // its weight and bias are replaced by each forward's
  nn::LinearFP8Mixed* mixed() const { return kind == LayerKind::mixed ? static_cast<nn::LinearFP8Mixed*>(linear.get()) : nullptr; }
  nn::LinearFP8* fp8() const { return kind == LayerKind::fp8 ? static_cast<nn::LinearFP8*>(linear.get()) : nullptr; }
  // bitsandbytes' block sizes of the simulated layers (picked from in/out features).
  std::pair<int64_t, int64_t> block_sizes() const {
    if (auto* m = mixed()) return {m->bsz, m->bsz2};
    if (kind == LayerKind::global) {
      auto* g = static_cast<nn::LinearFP8Global*>(linear.get());
      return {g->bsz, g->bsz2};
    }
    fail("octet.Layer", "bsz and bsz2 belong to LinearFP8Mixed and LinearFP8Global layers");
  }
  nn::LinearFP8& fp8_or_throw() const {
    if (!fp8()) fail("octet.Layer", "this setting belongs to LinearFP8 layers");
    return *fp8();
  }
};

Layer make_layer(const std::string& kind, int64_t in, int64_t out, bool bias) {
  // Made on the CPU in f32 (its own initial weight is dropped at once); each forward supplies
  // the caller's weight and bias (any device and dtype the layer takes).
  Layer l;
  if (kind == "mixed") l = {LayerKind::mixed, std::make_unique<nn::LinearFP8Mixed>(in, out, bias)};
  else if (kind == "global") l = {LayerKind::global, std::make_unique<nn::LinearFP8Global>(in, out, bias)};
  else if (kind == "fp8") l = {LayerKind::fp8, std::make_unique<nn::LinearFP8>(in, out, bias)};
  else fail_arg("octet.Layer", "kind", "\"mixed\", \"global\" or \"fp8\"", kind);
  l.linear->weight = Tensor();
  l.linear->bias = Tensor();
  return l;
}

}  // namespace

void bind_autograd(nb::module_& m) {
  nb::class_<Recorded>(m, "Recorded", "The tape of one recorded call (see matmul_fp8_mixed_recorded).")
      .def("backward", [](Recorded& r, nb::handle grad) {
             const char* op = "octet.Recorded.backward";
             if (r.consumed) fail(op, "this call's backward ran already (octet frees a tape when its backward runs)");
             backward(r.output, import_array(grad, op, "grad"));
             r.consumed = true;
             nb::list grads;
             for (const Tensor& l : r.leaves) grads.append(l.defined() ? export_tensor(l.grad(), r.library) : nb::none());
             r.leaves.clear();
             r.output = Tensor();
             return nb::tuple(grads);
           },
           nb::arg("grad"), "The gradients of the recorded inputs for the output's gradient `grad`.");

  m.def("matmul_fp8_mixed_recorded",
        [](nb::handle A, nb::handle B, nb::handle needs_grad, nb::handle fw_code, nb::handle bw_code, int64_t bsz, int64_t bsz2,
           const std::string& product) {
          const char* op = "octet.matmul_fp8_mixed";
          const std::vector<bool> needs = needs_arg(needs_grad, 2, op);
          Tensor a = leaf(A, needs[0], op, "A"), b = leaf(B, needs[1], op, "B");
          Tensor out = matmul_fp8_mixed(a, b, fw_code_arg(fw_code, op), bw_code_arg(bw_code, op), bsz, bsz2,
                                        fp8_product_arg(product));
          return recorded(out, {a, b}, needs, library_of(A));
        },
        nb::arg("A"), nb::arg("B"), nb::arg("needs_grad"), nb::arg("fw_code") = nb::none(), nb::arg("bw_code") = nb::none(),
        nb::arg("bsz") = -1, nb::arg("bsz2") = -1, nb::arg("product") = "simulated",
        "(out, Recorded): matmul_fp8_mixed with the gradients of A and B (needs_grad: two booleans) "
        "left to Recorded.backward.");
  m.def("matmul_fp8_global_recorded",
        [](nb::handle A, nb::handle B, nb::handle needs_grad, nb::handle fw_code, nb::handle bw_code) {
          const char* op = "octet.matmul_fp8_global";
          const std::vector<bool> needs = needs_arg(needs_grad, 2, op);
          Tensor a = leaf(A, needs[0], op, "A"), b = leaf(B, needs[1], op, "B");
          Tensor out = matmul_fp8_global(a, b, fw_code_arg(fw_code, op), bw_code_arg(bw_code, op));
          return recorded(out, {a, b}, needs, library_of(A));
        },
        nb::arg("A"), nb::arg("B"), nb::arg("needs_grad"), nb::arg("fw_code") = nb::none(), nb::arg("bw_code") = nb::none());

  nb::class_<Layer>(m, "Layer",
      "octet's LinearFP8Mixed (\"mixed\"), LinearFP8Global (\"global\") or LinearFP8 (\"fp8\": real FP8 "
      "GEMMs, current or delayed scaling) computing y = x W^T + b with the caller's weight and bias.")
      .def("__init__", [](Layer* self, const std::string& kind, int64_t in_features, int64_t out_features, bool bias) {
             new (self) Layer(make_layer(kind, in_features, out_features, bias));
           },
           nb::arg("kind"), nb::arg("in_features"), nb::arg("out_features"), nb::arg("bias") = true)
      .def("forward_recorded",
           [](Layer& l, nb::handle x, nb::handle weight, nb::handle bias, nb::handle needs_grad) {
             const char* op = "octet.Layer.forward";
             const std::vector<bool> needs = needs_arg(needs_grad, 3, op);
             Tensor xt = leaf(x, needs[0], op, "x"), w = leaf(weight, needs[1], op, "weight"),
                    b = leaf(bias, needs[2] && !bias.is_none(), op, "bias");
             l.linear->weight = w;
             l.linear->bias = b;
             if (nn::LinearFP8* f = l.fp8()) f->invalidate();  // the caller may have written the weight
             Tensor out = l.linear->forward(xt);
             l.linear->weight = Tensor();  // hold no reference to the caller's memory between calls
             l.linear->bias = Tensor();
             return recorded(out, {xt, w, b}, needs, library_of(x));
           },
           nb::arg("x"), nb::arg("weight"), nb::arg("bias").none(), nb::arg("needs_grad"),
           "(y, Recorded) with the gradients of x, weight and bias (needs_grad: three booleans).")
      .def_prop_ro("bsz", [](const Layer& l) { return l.block_sizes().first; })
      .def_prop_ro("bsz2", [](const Layer& l) { return l.block_sizes().second; })
      .def_prop_rw("product",
           [](const Layer& l) { return l.mixed() && l.mixed()->product == Fp8Product::tensor_cores ? "tensor_cores" : "simulated"; },
           [](Layer& l, const std::string& p) {
             if (!l.mixed()) fail("octet.Layer", "product belongs to LinearFP8Mixed layers");
             l.mixed()->product = fp8_product_arg(p);
           })
      .def_prop_rw("recipe",
           [](const Layer& l) { return l.fp8_or_throw().recipe == nn::Fp8Recipe::delayed ? "delayed" : "current"; },
           [](Layer& l, const std::string& r) {
             if (r != "current" && r != "delayed") fail_arg("octet.Layer", "recipe", "\"current\" or \"delayed\"", r);
             l.fp8_or_throw().recipe = r == "delayed" ? nn::Fp8Recipe::delayed : nn::Fp8Recipe::current;
           })
      .def_prop_rw("history_len", [](const Layer& l) { return l.fp8_or_throw().delayed.history_len; },
                   [](Layer& l, int64_t n) { l.fp8_or_throw().delayed.history_len = n; })
      .def_prop_rw("amax_algo",
           [](const Layer& l) { return l.fp8_or_throw().delayed.algo == AmaxAlgo::max ? "max" : "most_recent"; },
           [](Layer& l, const std::string& a) {
             if (a != "max" && a != "most_recent") fail_arg("octet.Layer", "amax_algo", "\"max\" or \"most_recent\"", a);
             l.fp8_or_throw().delayed.algo = a == "max" ? AmaxAlgo::max : AmaxAlgo::most_recent;
           })
      .def_prop_rw("margin", [](const Layer& l) { return l.fp8_or_throw().delayed.margin; },
                   [](Layer& l, int margin) { l.fp8_or_throw().delayed.margin = margin; })
      .def_prop_rw("crossover_macs", [](const Layer& l) { return l.fp8_or_throw().crossover_macs; },
                   [](Layer& l, int64_t macs) { l.fp8_or_throw().crossover_macs = macs; })
      .def_prop_ro("last_forward_fp8", [](const Layer& l) { return l.fp8_or_throw().last_forward_fp8(); });
}

}  // namespace octet::python
