// octet._octet._time_calls: the C++ side of the Python call-overhead benchmark (octet/bench.py).
// Runs the library call a Python wrapper makes, `calls` times in a loop on the same tensors, and
// returns the wall seconds per call including a final synchronize, the way bench.py times the
// Python calls, so that the difference is what the binding adds.
#include <nanobind/stl/string.h>

#include <chrono>

#include "octet/clip.hpp"
#include "octet/quant.hpp"
#include "octet/runtime.hpp"
#include "python/src/binding.hpp"

namespace octet::python {

void bind_bench(nb::module_& m) {
  m.def("_time_calls",
        [](const std::string& op, nb::handle array, nb::handle gnorm_vec, int64_t calls) {
          const char* name = "octet._time_calls";
          const Tensor t = import_array(array, name, "array");
          Tensor vec = import_optional(gnorm_vec, name, "gnorm_vec");
          const Code code;
          if (op != "quantize_blockwise" && op != "percentile_clipping")
            fail_arg(name, "op", "\"quantize_blockwise\" or \"percentile_clipping\"", op);
          synchronize(t.device());
          const auto start = std::chrono::steady_clock::now();
          for (int64_t i = 0; i < calls; ++i) {
            if (op == "quantize_blockwise") (void)quantize_blockwise(t, code, 4096);
            else (void)percentile_clipping(t, vec, i + 1);
          }
          synchronize(t.device());
          return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / double(calls);
        },
        nb::arg("op"), nb::arg("array"), nb::arg("gnorm_vec").none(), nb::arg("calls"));
}

}  // namespace octet::python
