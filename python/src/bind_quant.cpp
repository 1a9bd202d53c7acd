// octet._octet: code tables, Code, QuantState and the 8-bit quantize/dequantize family.
// A `code` argument is a Code or a 256-entry f32 table array (wrapped in a Code per call, which
// validates and reads it once); None is the signed dynamic table.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "octet/quant.hpp"
#include "python/src/binding.hpp"

namespace octet::python {

namespace {

// A QuantState with the library its arrays go back to.
struct PyQuantState {
  QuantState state;
  ArrayLibrary library;
};

Code code_arg(nb::handle code, std::string_view op) {
  if (code.is_none()) return Code();
  if (nb::isinstance<Code>(code)) return nb::cast<Code>(code);
  return Code(import_array(code, op, "code"));
}

std::optional<DType> dtype_opt(nb::handle dtype, std::string_view op) {
  if (dtype.is_none()) return std::nullopt;
  return parse_dtype(dtype, op, "out_dtype");
}

nb::tuple quantized(const Quantized& q, const ArrayLibrary& lib) {
  return nb::make_tuple(export_tensor(q.codes, lib), PyQuantState{q.state, lib});
}

nb::tuple shape_tuple(const Shape& shape) {
  nb::list out;
  for (int64_t s : shape) out.append(s);
  return nb::tuple(out);
}

}  // namespace

void bind_quant(nb::module_& m) {
  m.def("create_dynamic_map",
        [](bool is_signed, int max_exponent_bits, int total_bits, nb::handle like) {
          return export_like(create_dynamic_map(is_signed, max_exponent_bits, total_bits), like);
        },
        nb::arg("signed") = true, nb::arg("max_exponent_bits") = 7, nb::arg("total_bits") = 8, nb::arg("like") = nb::none(),
        "The dynamic code table of bitsandbytes 0.49.2 (f32 [256], on the CPU).");
  m.def("create_fp8_map",
        [](bool is_signed, int exponent_bits, int precision_bits, int total_bits, nb::handle like) {
          return export_like(create_fp8_map(is_signed, exponent_bits, precision_bits, total_bits), like);
        },
        nb::arg("signed") = true, nb::arg("exponent_bits") = 5, nb::arg("precision_bits") = 2, nb::arg("total_bits") = 8,
        nb::arg("like") = nb::none(), "An FP8-like code table (f32 [256], on the CPU).");
  m.def("create_linear_map",
        [](bool is_signed, int total_bits, nb::handle like) { return export_like(create_linear_map(is_signed, total_bits), like); },
        nb::arg("signed") = true, nb::arg("total_bits") = 8, nb::arg("like") = nb::none(),
        "The linear code table (f32 [256], on the CPU).");

  nb::class_<Code>(m, "Code", "A validated 256-entry f32 code table, cached per device.")
      .def("__init__", [](Code* self, nb::handle table, const std::string& name) {
             new (self) Code(table.is_none() ? Code() : Code(import_array(table, "octet.Code", "table"), name));
           },
           nb::arg("table") = nb::none(), nb::arg("name") = "user")
      .def_static("dynamic", &Code::dynamic, nb::arg("signed") = true)
      .def_static("fp8_e4m3", &Code::fp8_e4m3, "create_fp8_map(True, 4, 3, 8): the FP8 matmuls' forward code.")
      .def_static("fp8_e5m2", &Code::fp8_e5m2, "create_fp8_map(True, 5, 2, 8): the FP8 matmuls' backward code.")
      .def_static("linear", &Code::linear)
      .def_prop_ro("name", &Code::name)
      .def_prop_ro("values", &Code::values, "The 256 entries (a list of floats).")
      .def("table", [](const Code& c, const std::string& device, nb::handle like) {
             return export_like(c.table(Device::parse(device)), like);
           },
           nb::arg("device") = "cpu", nb::arg("like") = nb::none(),
           "The table on a device (shared with octet's cache: never write into it).")
      .def("__repr__", [](const Code& c) { return "octet.Code('" + c.name() + "')"; });

  nb::class_<PyQuantState>(m, "QuantState",
      "What dequantize needs: absmax (f32, or u8 codes when nested), code, blocksize (0: global), "
      "dtype and shape of the quantized input, and for a nested absmax its offset and inner state2.")
      .def("__init__",
           [](PyQuantState* self, nb::handle absmax, nb::handle code, int64_t blocksize, nb::handle dtype,
              const std::vector<int64_t>& shape, nb::handle offset, nb::handle state2) {
             const char* op = "octet.QuantState";
             QuantState s;
             s.absmax = import_array(absmax, op, "absmax");
             s.code = import_array(code, op, "code");
             s.blocksize = blocksize;
             s.dtype = parse_dtype(dtype, op, "dtype");
             s.shape = shape_arg(shape);
             s.offset = import_optional(offset, op, "offset");
             if (!state2.is_none()) {
               s.nested = true;
               s.state2 = std::make_shared<QuantState>(nb::cast<const PyQuantState&>(state2).state);
             }
             new (self) PyQuantState{s, library_of(absmax)};
           },
           nb::arg("absmax"), nb::arg("code"), nb::arg("blocksize"), nb::arg("dtype"), nb::arg("shape"),
           nb::arg("offset") = nb::none(), nb::arg("state2") = nb::none())
      .def_prop_ro("absmax", [](const PyQuantState& s) { return export_tensor(s.state.absmax, s.library); })
      .def_prop_ro("code", [](const PyQuantState& s) { return export_tensor(s.state.code, s.library); })
      .def_prop_ro("blocksize", [](const PyQuantState& s) { return s.state.blocksize; })
      .def_prop_ro("dtype", [](const PyQuantState& s) { return std::string(dtype_name(s.state.dtype)); })
      .def_prop_ro("shape", [](const PyQuantState& s) { return shape_tuple(s.state.shape); })
      .def_prop_ro("nested", [](const PyQuantState& s) { return s.state.nested; })
      .def_prop_ro("offset", [](const PyQuantState& s) { return export_tensor(s.state.offset, s.library); })
      .def_prop_ro("state2", [](const PyQuantState& s) -> nb::object {
             if (!s.state.state2) return nb::none();
             return nb::cast(PyQuantState{*s.state.state2, s.library});
           })
      .def("__repr__", [](const PyQuantState& s) {
             return "octet.QuantState(blocksize=" + std::to_string(s.state.blocksize) + ", dtype=" +
                    std::string(dtype_name(s.state.dtype)) + ", shape=" + shape_str(s.state.shape) +
                    (s.state.nested ? ", nested" : "") + ")";
           });

  m.def("quantize", [](nb::handle A, nb::handle code) {
          const char* op = "octet.quantize";
          return quantized(quantize(import_array(A, op, "A"), code_arg(code, op)), library_of(A));
        },
        nb::arg("A"), nb::arg("code") = nb::none(),
        "(codes u8, QuantState): one absmax for the whole tensor (A / absmax, IEEE division).");
  m.def("dequantize", [](nb::handle codes, const PyQuantState& state, nb::handle out_dtype) {
          const char* op = "octet.dequantize";
          return export_tensor(dequantize(import_array(codes, op, "codes"), state.state, dtype_opt(out_dtype, op)),
                               library_of(codes));
        },
        nb::arg("codes"), nb::arg("state"), nb::arg("out_dtype") = nb::none(),
        "code[codes] * absmax, in state.dtype unless out_dtype is given.");
  m.def("quantize_blockwise", [](nb::handle A, nb::handle code, int64_t blocksize, bool nested) {
          const char* op = "octet.quantize_blockwise";
          return quantized(quantize_blockwise(import_array(A, op, "A"), code_arg(code, op), blocksize, nested), library_of(A));
        },
        nb::arg("A"), nb::arg("code") = nb::none(), nb::arg("blocksize") = 4096, nb::arg("nested") = false,
        "(codes u8, QuantState): an absmax per block of `blocksize` consecutive elements (a power of two "
        "in [32, 4096]); nested: the absmax quantized again (dynamic table, same blocksize).");
  m.def("dequantize_blockwise", [](nb::handle codes, const PyQuantState& state, nb::handle out_dtype) {
          const char* op = "octet.dequantize_blockwise";
          return export_tensor(dequantize_blockwise(import_array(codes, op, "codes"), state.state, dtype_opt(out_dtype, op)),
                               library_of(codes));
        },
        nb::arg("codes"), nb::arg("state"), nb::arg("out_dtype") = nb::none());
  m.def("fake_quantize", [](nb::handle A, nb::handle code) {
          const char* op = "octet.fake_quantize";
          return export_tensor(fake_quantize(import_array(A, op, "A"), code_arg(code, op)), library_of(A));
        },
        nb::arg("A"), nb::arg("code") = nb::none(), "dequantize(quantize(A)) in one pass, in A's dtype.");
  m.def("fake_quantize_blockwise", [](nb::handle A, nb::handle code, int64_t blocksize) {
          const char* op = "octet.fake_quantize_blockwise";
          return export_tensor(fake_quantize_blockwise(import_array(A, op, "A"), code_arg(code, op), blocksize), library_of(A));
        },
        nb::arg("A"), nb::arg("code") = nb::none(), nb::arg("blocksize") = 4096,
        "dequantize_blockwise(quantize_blockwise(A)) in one pass, in A's dtype.");
}

}  // namespace octet::python
