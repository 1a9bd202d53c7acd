// The extension module octet._octet: registers each family's wrappers (bind_*.cpp). The package
// octet (python/octet/__init__.py) re-exports them; nothing else stands between a Python call and
// the library function it wraps.
#include "octet_build_config.h"
#include "python/src/binding.hpp"

NB_MODULE(_octet, m) {
  using namespace octet::python;
  m.attr("__version__") = OCTET_VERSION;
  m.doc() = "octet: 8-bit quantization, percentile clipping and FP8 matmuls (C++/CUDA) for any DLPack array.";
  bind_errors(m);
  bind_interop(m);
  bind_core(m);
  bind_quant(m);
  bind_clip(m);
  bind_fp8(m);
  bind_autograd(m);
  bind_bench(m);
}
