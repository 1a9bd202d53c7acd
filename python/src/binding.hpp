// Shared by the files of the extension octet._octet: arrays in and out (interop.cpp), the error
// translation (errors.cpp) and the bind_* functions that each register one family of the library.
// Contract of every wrapped function: array arguments are any object with __dlpack__ (imported
// without a copy by octet::from_dlpack, refused with octet's message when octet cannot alias it);
// results go back as arrays of the library of the call's first array argument (ArrayLibrary).
#pragma once
#include <nanobind/nanobind.h>

#include <string>
#include <string_view>
#include <vector>

#include "octet/fp8_simulated.hpp"
#include "octet/tensor.hpp"

namespace octet::python {

namespace nb = nanobind;

// Where results go: the from_dlpack of the library of an input array (numpy.from_dlpack,
// torch.from_dlpack, cupy.from_dlpack, jax.numpy.from_dlpack, or the `from_dlpack` of the array
// type's top-level module), or none: results then stay octet.Array objects (they export DLPack).
// NumPy is special only in its element types: bf16 and fp8 go through ml_dtypes.
struct ArrayLibrary {
  nb::object from_dlpack = nb::none();  // None: return octet.Array
  bool numpy = false;
};

// The library of `array` (cached per Python type).
ArrayLibrary library_of(nb::handle array);
// The library named by `like`: an array (as library_of), a module with from_dlpack, or None
// (NumPy for CPU results, octet.Array otherwise: see export_tensor).
ArrayLibrary library_like(nb::handle like);

// The tensor `array` holds, without a copy (DLPack; ml_dtypes NumPy arrays through a view of
// their bits). For a CUDA array the producer is asked to order its work before octet's current
// stream of that device (__dlpack__(stream=...)). Throws octet.TypeError for objects that are
// not arrays and octet's own error for arrays octet cannot alias (strided, unsupported dtype).
Tensor import_array(nb::handle array, std::string_view op, std::string_view arg);
// Same, None gives an undefined tensor.
Tensor import_optional(nb::handle array, std::string_view op, std::string_view arg);
// Same, for an array the call writes into: refuses read-only arrays (DLPack's read-only flag).
Tensor import_writable(nb::handle array, std::string_view op, std::string_view arg);

// `t` as an array of `library` (no copy); undefined tensors give None. Without a from_dlpack,
// and for NumPy with a CUDA tensor, the result is an octet.Array.
nb::object export_tensor(const Tensor& t, const ArrayLibrary& library);
// export_tensor(t, library_like(like)).
nb::object export_like(const Tensor& t, nb::handle like);

// A dtype argument: octet's names ("f32", "bf16", "f8_e4m3"), the usual long names ("float16",
// "bfloat16", "float8_e4m3fn"), or an object whose str() ends in one (torch.float16).
DType parse_dtype(nb::handle dtype, std::string_view op, std::string_view arg);
Shape shape_arg(const std::vector<int64_t>& shape);
// Code arguments of the FP8 matmuls: a Code, a table array, or None (E4M3 forward, E5M2 backward).
Code fw_code_arg(nb::handle code, std::string_view op);
Code bw_code_arg(nb::handle code, std::string_view op);
Fp8Product fp8_product_arg(const std::string& product);  // "simulated" or "tensor_cores"

// The stream value a DLPack producer expects for octet's current stream of cuda:index
// (1 for the legacy default stream, else the cudaStream_t as an integer).
int64_t dlpack_stream_of(int device_index);

// Registration, one per family.
void bind_errors(nb::module_& m);
void bind_interop(nb::module_& m);
void bind_core(nb::module_& m);
void bind_quant(nb::module_& m);
void bind_clip(nb::module_& m);
void bind_fp8(nb::module_& m);
void bind_autograd(nb::module_& m);
void bind_bench(nb::module_& m);

}  // namespace octet::python
