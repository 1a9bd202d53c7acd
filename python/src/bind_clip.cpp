// octet._octet: percentile gradient clipping in both forms (host step with a gnorm_vec array;
// ClipState on the device) and scale_ (grad *= scale in place). Results are device scalars:
// nothing here waits for the GPU.
#include <nanobind/stl/string.h>

#include "octet/clip.hpp"
#include "python/src/binding.hpp"

namespace octet::python {

namespace {

// A ClipState with the library its arrays go back to.
struct PyClipState {
  ClipState state;
  ArrayLibrary library;
};

nb::tuple result_tuple(const ClipResult& r, const ArrayLibrary& lib) {
  return nb::make_tuple(export_tensor(r.gnorm, lib), export_tensor(r.clip_value, lib), export_tensor(r.scale, lib));
}

}  // namespace

void bind_clip(nb::module_& m) {
  nb::class_<PyClipState>(m, "ClipState",
      "Clipping state on one device: gnorm_vec (f32 [100] squared norms), step (i64 [], the step "
      "the next call uses) and the last result (gnorm, clip_value, scale), all device arrays "
      "rewritten in place by each call (so that a captured CUDA graph can replay it).")
      .def("__init__", [](PyClipState* self, const std::string& device, int64_t first_step, nb::handle like) {
             new (self) PyClipState{ClipState::create(Device::parse(device), first_step), library_like(like)};
           },
           nb::arg("device") = "cpu", nb::arg("first_step") = 1, nb::arg("like") = nb::none())
      .def_prop_ro("gnorm_vec", [](const PyClipState& s) { return export_tensor(s.state.gnorm_vec, s.library); })
      .def_prop_ro("step", [](const PyClipState& s) { return export_tensor(s.state.step, s.library); })
      .def_prop_ro("gnorm", [](const PyClipState& s) { return export_tensor(s.state.result.gnorm, s.library); })
      .def_prop_ro("clip_value", [](const PyClipState& s) { return export_tensor(s.state.result.clip_value, s.library); })
      .def_prop_ro("scale", [](const PyClipState& s) { return export_tensor(s.state.result.scale, s.library); });

  m.def("percentile_clipping", [](nb::handle grad, PyClipState& state, int percentile) {
          const char* op = "octet.percentile_clipping";
          return result_tuple(percentile_clipping(import_array(grad, op, "grad"), state.state, percentile), library_of(grad));
        },
        nb::arg("grad"), nb::arg("state"), nb::arg("percentile") = 5,
        "One step on a ClipState: (gnorm, clip_value, scale), the state's own result arrays.");
  m.def("percentile_clipping", [](nb::handle grad, nb::handle gnorm_vec, int64_t step, int percentile) {
          const char* op = "octet.percentile_clipping";
          Tensor history = import_writable(gnorm_vec, op, "gnorm_vec");
          return result_tuple(percentile_clipping(import_array(grad, op, "grad"), history, step, percentile), library_of(grad));
        },
        nb::arg("grad"), nb::arg("gnorm_vec"), nb::arg("step"), nb::arg("percentile") = 5,
        "(gnorm, clip_value, scale) as fresh 0-dim f32 arrays on grad's device; gnorm_vec (f32 [100] "
        "squared norms) is updated in place. step >= 1; percentile in [0, 99].");
  m.def("scale_", [](nb::handle grad, nb::handle scale) {
          const char* op = "octet.scale_";
          scale_by_(import_writable(grad, op, "grad"), import_array(scale, op, "scale"));
        },
        nb::arg("grad"), nb::arg("scale"),
        "grad *= scale in place (scale: an f32 0-dim array on grad's device, e.g. the clipping scale); "
        "nothing is written when scale is exactly 1.");
}

}  // namespace octet::python
