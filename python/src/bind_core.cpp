// octet._octet: devices, streams, random numbers, copies and safetensors files.
// Devices are strings ("cpu", "cuda", "cuda:1"); dtypes are octet's names ("f32", "bf16",
// "f8_e4m3", ...) or anything whose str() ends in a usual name ("float16", torch.bfloat16,
// numpy.dtype("uint8"), "float8_e4m3fn").
#include <nanobind/stl/map.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "octet/io.hpp"
#include "octet/random.hpp"
#include "octet/runtime.hpp"
#include "python/src/binding.hpp"

namespace octet::python {

namespace {

struct DTypeName {
  const char* name;
  DType dtype;
};
const DTypeName kDTypeNames[] = {
    {"f32", DType::f32}, {"float32", DType::f32}, {"float", DType::f32},
    {"f64", DType::f64}, {"float64", DType::f64}, {"double", DType::f64},
    {"f16", DType::f16}, {"float16", DType::f16}, {"half", DType::f16},
    {"bf16", DType::bf16}, {"bfloat16", DType::bf16},
    {"u8", DType::u8}, {"uint8", DType::u8},
    {"i32", DType::i32}, {"int32", DType::i32},
    {"i64", DType::i64}, {"int64", DType::i64},
    {"f8_e4m3", DType::f8_e4m3}, {"float8_e4m3fn", DType::f8_e4m3},
    {"f8_e5m2", DType::f8_e5m2}, {"float8_e5m2", DType::f8_e5m2},
};

Device device_arg(const std::string& name) { return Device::parse(name); }

}  // namespace

DType parse_dtype(nb::handle dtype, std::string_view op, std::string_view arg) {
  // a type (ml_dtypes.bfloat16, numpy.float16) by its name, anything else by its str()
  std::string text = nb::cast<std::string>(nb::hasattr(dtype, "__name__") ? nb::str(dtype.attr("__name__")) : nb::str(dtype));
  const size_t dot = text.rfind('.');
  if (dot != std::string::npos) text = text.substr(dot + 1);  // torch.float16, numpy.float16
  for (const DTypeName& d : kDTypeNames)
    if (text == d.name) return d.dtype;
  fail_arg(op, arg, "a dtype (f32, f64, f16, bf16, u8, i32, i64, f8_e4m3, f8_e5m2)", text);
}

Shape shape_arg(const std::vector<int64_t>& shape) { return Shape(shape.begin(), shape.end()); }

void bind_core(nb::module_& m) {
  m.def("dtype_name", [](nb::handle dtype) { return std::string(dtype_name(parse_dtype(dtype, "octet.dtype_name", "dtype"))); },
        nb::arg("dtype"), "octet's name of a dtype (\"f32\", \"bf16\", ...).");

  m.def("cuda_device_count", &cuda_device_count, "GPUs usable here (0 without a driver).");
  m.def("cuda_available", &cuda_available);
  m.def("default_device", [] { return default_device().str(); }, "\"cuda:0\" when a GPU is present, else \"cpu\".");
  m.def("device", [](const std::string& name) { return device_arg(name).str(); }, nb::arg("name"),
        "The canonical name of a device (\"cuda\" -> \"cuda:0\"); raises for unknown names.");

  m.def("current_stream", [](const std::string& device) {
          const Device d = device_arg(device);
          if (!d.is_cuda()) fail_arg("octet.current_stream", "device", "a CUDA device", d.str());
          return reinterpret_cast<uintptr_t>(current_stream(d.index));
        },
        nb::arg("device") = "cuda",
        "The cudaStream_t (as an integer) octet's work on the device is enqueued on.");
  m.def("set_stream", [](const std::string& device, nb::handle stream) {
          const Device d = device_arg(device);
          if (!d.is_cuda()) fail_arg("octet.set_stream", "device", "a CUDA device", d.str());
          const auto value = stream.is_none() ? uintptr_t{0} : nb::cast<uintptr_t>(stream);
          set_current_stream(d.index, reinterpret_cast<cudaStream_t>(value));
        },
        nb::arg("device"), nb::arg("stream").none(),
        "Enqueue octet's work on the device on `stream` (a cudaStream_t as an integer, e.g. "
        "torch.cuda.current_stream().cuda_stream; the caller keeps it alive) from now on; None "
        "restores octet's own stream.");
  m.def("synchronize", [](const std::string& device) { synchronize(device_arg(device)); }, nb::arg("device") = "cuda",
        "Waits for the work enqueued on the device's current stream (no-op for the CPU).");
  m.def("memory_stats", [](const std::string& device) {
          const Device d = device_arg(device);
          const MemoryStats s = memory_stats(d.index);
          return nb::make_tuple(s.reserved, s.used);
        },
        nb::arg("device") = "cuda", "(reserved, used) bytes of octet's CUDA memory pool of the device.");

  m.def("manual_seed", [](uint64_t seed) { manual_seed(seed); }, nb::arg("seed"),
        "Seeds octet's random stream (cuRAND Philox; the same uniforms on the CPU and CUDA).");
  m.def("rand", [](const std::vector<int64_t>& shape, nb::handle dtype, const std::string& device, nb::handle like) {
          return export_like(rand(shape_arg(shape), parse_dtype(dtype, "octet.rand", "dtype"), device_arg(device)), like);
        },
        nb::arg("shape"), nb::arg("dtype") = "f32", nb::arg("device") = "cpu", nb::arg("like") = nb::none(),
        "Uniform on (0, 1]. like: the result's library (an array or a module; None: NumPy for the CPU, else octet.Array).");
  m.def("randn", [](const std::vector<int64_t>& shape, nb::handle dtype, const std::string& device, nb::handle like) {
          return export_like(randn(shape_arg(shape), parse_dtype(dtype, "octet.randn", "dtype"), device_arg(device)), like);
        },
        nb::arg("shape"), nb::arg("dtype") = "f32", nb::arg("device") = "cpu", nb::arg("like") = nb::none(),
        "Standard normal (see rand).");

  m.def("copy_", [](nb::handle dst, nb::handle src) {
          Tensor d = import_writable(dst, "octet.copy_", "dst");
          d.copy_(import_array(src, "octet.copy_", "src"));
        },
        nb::arg("dst"), nb::arg("src"), "dst[...] = src (same shape; any dtypes and devices), in place.");

  m.def("load_safetensors", [](const std::string& path, const std::string& device, nb::handle like) {
          const ArrayLibrary lib = library_like(like);
          nb::dict out;
          for (const auto& [name, t] : load_safetensors(path, device_arg(device))) out[nb::str(name.c_str())] = export_tensor(t, lib);
          return out;
        },
        nb::arg("path"), nb::arg("device") = "cpu", nb::arg("like") = nb::none(),
        "{name: array} of a safetensors file (every problem of the file raises octet.Error).");
  m.def("load_safetensors_metadata", [](const std::string& path) { return load_safetensors_metadata(path); },
        nb::arg("path"));
  m.def("save_safetensors", [](const std::string& path, const nb::dict& tensors, const std::map<std::string, std::string>& metadata) {
          TensorMap map;
          for (auto [name, value] : tensors) {
            std::string key = nb::cast<std::string>(name);
            map.emplace(key, import_array(value, "octet.save_safetensors", key));
          }
          save_safetensors(path, map, metadata);
        },
        nb::arg("path"), nb::arg("tensors"), nb::arg("metadata") = std::map<std::string, std::string>{},
        "Writes {name: array} (any device) to path (through path.tmp and a rename).");
}

}  // namespace octet::python
