// octet._octet: the simulated FP8 matmuls of bitsandbytes (matmul_fp8_mixed/global) and the real
// FP8 family (scaled casts, amax, scaling recipes, the FP8 GEMM). Scales are 1-element f32 arrays
// on the data's device; nothing here waits for the GPU. Differentiable use goes through
// octet.torch (bind_autograd.cpp): these wrappers record nothing.
#include <nanobind/stl/string.h>

#include "octet/fp8_gemm.hpp"
#include "octet/fp8_simulated.hpp"
#include "python/src/binding.hpp"

namespace octet::python {

namespace {

Code code_or(nb::handle code, Code fallback, std::string_view op, std::string_view arg) {
  if (code.is_none()) return fallback;
  if (nb::isinstance<Code>(code)) return nb::cast<Code>(code);
  return Code(import_array(code, op, arg));
}

Fp8Product product_arg(const std::string& product) {
  if (product == "simulated") return Fp8Product::simulated;
  if (product == "tensor_cores") return Fp8Product::tensor_cores;
  fail_arg("octet.matmul_fp8_mixed", "product", "\"simulated\" or \"tensor_cores\"", product);
}

DType fp8_arg(nb::handle dtype, std::string_view op) {
  const DType t = parse_dtype(dtype, op, "fp8");
  if (t != DType::f8_e4m3 && t != DType::f8_e5m2) fail_arg(op, "fp8", "f8_e4m3 or f8_e5m2", dtype_name(t));
  return t;
}

AmaxAlgo algo_arg(const std::string& algo) {
  if (algo == "max") return AmaxAlgo::max;
  if (algo == "most_recent") return AmaxAlgo::most_recent;
  fail_arg("octet.fp8_delayed_scale", "algo", "\"max\" or \"most_recent\"", algo);
}

const char* path_name(Fp8GemmPath p) {
  switch (p) {
    case Fp8GemmPath::cpu_emulation: return "cpu_emulation";
    case Fp8GemmPath::cublaslt: return "cublaslt";
    case Fp8GemmPath::cublaslt_padded: return "cublaslt_padded";
    case Fp8GemmPath::dequantize_fallback: return "dequantize_fallback";
  }
  return "unknown";
}

}  // namespace

Code fw_code_arg(nb::handle code, std::string_view op) { return code_or(code, Code::fp8_e4m3(), op, "fw_code"); }
Code bw_code_arg(nb::handle code, std::string_view op) { return code_or(code, Code::fp8_e5m2(), op, "bw_code"); }
Fp8Product fp8_product_arg(const std::string& product) { return product_arg(product); }

void bind_fp8(nb::module_& m) {
  m.def("matmul_fp8_mixed",
        [](nb::handle A, nb::handle B, nb::handle fw_code, nb::handle bw_code, int64_t bsz, int64_t bsz2,
           const std::string& product) {
          const char* op = "octet.matmul_fp8_mixed";
          return export_tensor(matmul_fp8_mixed(import_array(A, op, "A"), import_array(B, op, "B"), fw_code_arg(fw_code, op),
                                                bw_code_arg(bw_code, op), bsz, bsz2, product_arg(product)),
                               library_of(A));
        },
        nb::arg("A"), nb::arg("B"), nb::arg("fw_code") = nb::none(), nb::arg("bw_code") = nb::none(), nb::arg("bsz") = -1,
        nb::arg("bsz2") = -1, nb::arg("product") = "simulated",
        "A @ B with A blockwise- and B globally fake-quantized with fw_code (default E4M3); "
        "product \"tensor_cores\" multiplies the same codes on FP8 tensor cores where that applies.");
  m.def("matmul_fp8_global",
        [](nb::handle A, nb::handle B, nb::handle fw_code, nb::handle bw_code) {
          const char* op = "octet.matmul_fp8_global";
          return export_tensor(matmul_fp8_global(import_array(A, op, "A"), import_array(B, op, "B"), fw_code_arg(fw_code, op),
                                                 bw_code_arg(bw_code, op)),
                               library_of(A));
        },
        nb::arg("A"), nb::arg("B"), nb::arg("fw_code") = nb::none(), nb::arg("bw_code") = nb::none(),
        "A @ B with both operands globally fake-quantized with fw_code (default E4M3).");
  m.def("fp8_block_sizes", [](nb::handle A, nb::handle B) {
          const char* op = "octet.fp8_block_sizes";
          const auto [bsz, bsz2] = fp8_block_sizes(import_array(A, op, "A"), import_array(B, op, "B"));
          return nb::make_tuple(bsz, bsz2);
        },
        nb::arg("A"), nb::arg("B"), "(bsz, bsz2) picked for A @ B when they are -1.");
  m.def("fp8_tensor_core_forward", [](nb::handle A, nb::handle B, nb::handle fw_code, int64_t bsz) {
          const char* op = "octet.fp8_tensor_core_forward";
          return fp8_tensor_core_forward(import_array(A, op, "A"), import_array(B, op, "B"), fw_code_arg(fw_code, op), bsz);
        },
        nb::arg("A"), nb::arg("B"), nb::arg("fw_code") = nb::none(), nb::arg("bsz") = -1);

  m.def("fp8_max", [](nb::handle fp8) { return fp8_max(fp8_arg(fp8, "octet.fp8_max")); }, nb::arg("fp8"));
  m.def("fp8_tensor_cores", &fp8_tensor_cores, nb::arg("device_index") = 0,
        "Whether cuda:device_index has FP8 tensor cores (compute capability >= 8.9).");
  m.def("cast_to_fp8",
        [](nb::handle x, nb::handle fp8, nb::handle scale, nb::handle amax, bool transpose, bool column_sums) {
          const char* op = "octet.cast_to_fp8";
          const Fp8Cast c = cast_to_fp8(import_array(x, op, "x"), fp8_arg(fp8, op), import_array(scale, op, "scale"),
                                        amax.is_none() ? Tensor() : import_writable(amax, op, "amax"), transpose, column_sums);
          const ArrayLibrary lib = library_of(x);
          return nb::make_tuple(export_tensor(c.data, lib), export_tensor(c.transposed, lib), export_tensor(c.column_sums, lib));
        },
        nb::arg("x"), nb::arg("fp8"), nb::arg("scale"), nb::arg("amax") = nb::none(), nb::arg("transpose") = false,
        nb::arg("column_sums") = false,
        "(data, transposed, column_sums): q = sat_rne(x * scale[0]) as f8_e4m3/f8_e5m2 (None for the parts "
        "not asked for); max|x| goes into amax[0] when amax is given.");
  m.def("fp8_amax", [](nb::handle x) {
          return export_tensor(fp8_amax(import_array(x, "octet.fp8_amax", "x")), library_of(x));
        },
        nb::arg("x"), "max |x| as a 0-dim f32 array (NaN if any NaN, 0 if empty).");
  m.def("dequantize_fp8", [](nb::handle q, nb::handle scale_inv, nb::handle out) {
          const char* op = "octet.dequantize_fp8";
          return export_tensor(dequantize_fp8(import_array(q, op, "q"), import_array(scale_inv, op, "scale_inv"),
                                              parse_dtype(out, op, "out")),
                               library_of(q));
        },
        nb::arg("q"), nb::arg("scale_inv"), nb::arg("out") = "f32");
  m.def("fp8_current_scale", [](nb::handle amax, nb::handle fp8, int margin) {
          const char* op = "octet.fp8_current_scale";
          const Fp8Scale s = fp8_current_scale(import_array(amax, op, "amax"), fp8_arg(fp8, op), margin);
          const ArrayLibrary lib = library_of(amax);
          return nb::make_tuple(export_tensor(s.scale, lib), export_tensor(s.scale_inv, lib));
        },
        nb::arg("amax"), nb::arg("fp8"), nb::arg("margin") = 0,
        "(scale, scale_inv) of current scaling: fp8_max / amax / 2^margin (1 for amax 0 or not finite).");
  m.def("fp8_delayed_scale",
        [](nb::handle history, nb::handle scale, nb::handle scale_inv, nb::handle fp8, const std::string& algo, int margin) {
          const char* op = "octet.fp8_delayed_scale";
          Tensor h = import_writable(history, op, "history");
          DelayedScaling recipe;
          recipe.history_len = h.numel();
          recipe.algo = algo_arg(algo);
          recipe.margin = margin;
          const Fp8Scale s = fp8_delayed_scale(h, Fp8Scale{import_array(scale, op, "scale"), import_array(scale_inv, op, "scale_inv")},
                                               fp8_arg(fp8, op), recipe);
          const ArrayLibrary lib = library_of(history);
          return nb::make_tuple(export_tensor(s.scale, lib), export_tensor(s.scale_inv, lib));
        },
        nb::arg("history"), nb::arg("scale"), nb::arg("scale_inv"), nb::arg("fp8"), nb::arg("algo") = "max",
        nb::arg("margin") = 0,
        "New (scale, scale_inv) from an amax history (latest in slot 0; rolled in place), keeping the "
        "previous scale when the amax is 0 or not finite.");
  m.def("matmul_fp8",
        [](nb::handle a, nb::handle b, nb::handle scale_a, nb::handle scale_b, nb::handle out_dtype, nb::handle bias,
           bool fast_accum) {
          const char* op = "octet.matmul_fp8";
          return export_tensor(matmul_fp8(import_array(a, op, "a"), import_array(b, op, "b"), import_array(scale_a, op, "scale_a"),
                                          import_array(scale_b, op, "scale_b"), parse_dtype(out_dtype, op, "out_dtype"),
                                          import_optional(bias, op, "bias"), fast_accum),
                               library_of(a));
        },
        nb::arg("a"), nb::arg("b"), nb::arg("scale_a"), nb::arg("scale_b"), nb::arg("out_dtype") = "f32",
        nb::arg("bias") = nb::none(), nb::arg("fast_accum") = true,
        "(a * scale_a) (b * scale_b)^T + bias for FP8 a (..., K) and b (N, K): cuBLASLt FP8 tensor cores "
        "on CUDA, an exact emulation on the CPU.");
  m.def("matmul_fp8_path",
        [](nb::handle a, nb::handle b, nb::handle out_dtype, nb::handle bias, bool fast_accum) {
          const char* op = "octet.matmul_fp8_path";
          return path_name(matmul_fp8_path(import_array(a, op, "a"), import_array(b, op, "b"), parse_dtype(out_dtype, op, "out_dtype"),
                                           import_optional(bias, op, "bias"), fast_accum));
        },
        nb::arg("a"), nb::arg("b"), nb::arg("out_dtype") = "f32", nb::arg("bias") = nb::none(), nb::arg("fast_accum") = true);
}

}  // namespace octet::python
