// Arrays in and out of octet._octet through DLPack's PyCapsule protocol, without copies.
// In: x.__dlpack__(stream=S, max_version=(1, 1)) (older producers: without max_version), where S
//   is octet's current stream of the array's GPU, so that the producer orders its pending work
//   before octet's; the capsule ("dltensor_versioned" or "dltensor") goes to octet::from_dlpack,
//   which takes ownership, and is renamed "used_dltensor[_versioned]". NumPy cannot export bf16
//   or fp8 (ml_dtypes) arrays: their bits are exported as uint16/uint8 and the DLPack dtype is
//   set to bf16/fp8 before octet takes them.
// Out: octet.Array holds a tensor and exports it (__dlpack__/__dlpack_device__); the consumer's
//   __dlpack__(stream=S) makes S wait for octet's current stream (an event), so the consumer sees
//   octet's results, and when S is another stream, octet's free of the memory (on its stream, once
//   the consumer lets go) first waits for what S queued until then. The result library's
//   from_dlpack takes it; NumPy takes bf16/fp8 tensors as uint16/uint8 viewed as the ml_dtypes type.
#include <cuda_runtime_api.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/string_view.h>

#include <optional>
#include <unordered_map>

#include "octet/dlpack.hpp"
#include "octet/runtime.hpp"
#include "python/src/binding.hpp"
#include "python/src/errors.hpp"

namespace octet::python {

namespace {

constexpr const char* kVersioned = "dltensor_versioned";
constexpr const char* kUsedVersioned = "used_dltensor_versioned";
constexpr const char* kLegacy = "dltensor";
constexpr const char* kUsedLegacy = "used_dltensor";

// ---- ml_dtypes: the NumPy element types DLPack's NumPy cannot carry ----------------------------
struct BitsType {
  const char* ml_name;  // ml_dtypes' name of the type
  DType dtype;
  DLDataType dl;        // what octet sees
  const char* bits;     // the NumPy type of the same size that carries the bits
};
const BitsType kBitsTypes[] = {
    {"bfloat16", DType::bf16, DLDataType{kDLBfloat, 16, 1}, "uint16"},
    {"float8_e4m3fn", DType::f8_e4m3, DLDataType{kDLFloat8_e4m3fn, 8, 1}, "uint8"},
    {"float8_e5m2", DType::f8_e5m2, DLDataType{kDLFloat8_e5m2, 8, 1}, "uint8"},
};
const BitsType* bits_type_of(DType t) {
  for (const BitsType& b : kBitsTypes)
    if (b.dtype == t) return &b;
  return nullptr;
}
// The BitsType of a NumPy array of an ml_dtypes type (dtype kind 'V', or 'f' for float8_e5m2),
// else nullptr.
const BitsType* bits_type_of(nb::handle numpy_array) {
  nb::object dtype = numpy_array.attr("dtype");
  const std::string_view kind = nb::cast<std::string_view>(dtype.attr("kind"));
  if (kind != "V" && kind != "f") return nullptr;
  const std::string_view name = nb::cast<std::string_view>(dtype.attr("name"));
  for (const BitsType& b : kBitsTypes)
    if (name == b.ml_name) return &b;
  return nullptr;
}

nb::object ml_dtypes_type(const BitsType& b) {
  nb::object ml_dtypes;
  try {
    ml_dtypes = nb::module_::import_("ml_dtypes");
  } catch (const nb::python_error&) {
    throw ArrayTypeError(cat("octet: a ", dtype_name(b.dtype), " result as a NumPy array needs ml_dtypes (pip install ml_dtypes)"));
  }
  return ml_dtypes.attr(b.ml_name);
}

// ---- libraries ---------------------------------------------------------------------------------
nb::handle numpy_module() {
  // Never released: a static nb::object would be destroyed after the interpreter has finalized.
  static PyObject* numpy = nb::module_::import_("numpy").release().ptr();
  return numpy;
}

ArrayLibrary library_of_module_name(std::string_view root) {
  ArrayLibrary lib;
  if (root == "numpy") {
    lib.from_dlpack = numpy_module().attr("from_dlpack");
    lib.numpy = true;
  } else if (root == "jax" || root == "jaxlib") {
    lib.from_dlpack = nb::module_::import_("jax.numpy").attr("from_dlpack");
  } else if (root != "octet") {
    nb::object modules = nb::module_::import_("sys").attr("modules");
    nb::object module = modules.attr("get")(nb::str(root.data(), root.size()));
    if (!module.is_none() && nb::hasattr(module, "from_dlpack")) lib.from_dlpack = module.attr("from_dlpack");
  }
  return lib;
}

std::string_view module_root(std::string_view name) { return name.substr(0, name.find('.')); }

// ---- export -------------------------------------------------------------------------------------
// Capsule destructors: a capsule nobody consumed still owns its tensor.
void destroy_versioned(PyObject* capsule) {
  if (!PyCapsule_IsValid(capsule, kVersioned)) return;  // consumed (renamed)
  auto* managed = static_cast<DLManagedTensorVersioned*>(PyCapsule_GetPointer(capsule, kVersioned));
  if (managed && managed->deleter) managed->deleter(managed);
}
void destroy_legacy(PyObject* capsule) {
  if (!PyCapsule_IsValid(capsule, kLegacy)) return;
  auto* managed = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule, kLegacy));
  if (managed && managed->deleter) managed->deleter(managed);
}

// The consumer's stream of the DLPack protocol as a cudaStream_t (None and 1: the legacy default
// stream, 2: the per-thread default stream). 0 is ambiguous and not allowed for CUDA.
cudaStream_t consumer_stream(nb::handle stream) {
  if (stream.is_none()) return cudaStreamLegacy;
  const int64_t value = nb::cast<int64_t>(stream);
  if (value == 1) return cudaStreamLegacy;
  if (value == 2) return cudaStreamPerThread;
  if (value == 0 || value < -1)
    throw nb::buffer_error("octet.Array.__dlpack__: stream must be None, -1, 1, 2 or a CUDA stream, got 0");
  return reinterpret_cast<cudaStream_t>(static_cast<intptr_t>(value));
}

// Makes `consumer` wait for the work enqueued so far on octet's current stream of the device,
// through one event per device, made once and recorded again for each wait (a wait takes the
// event's state at the time it is enqueued; the GIL serializes the calls).
void order_after_octet(int device_index, cudaStream_t consumer) {
  cudaStream_t producer = current_stream(device_index);
  if (producer == consumer) return;
  static std::unordered_map<int, cudaEvent_t>* events = new std::unordered_map<int, cudaEvent_t>();
  int previous = 0;
  bool switched = false;
  cudaError_t e = cudaGetDevice(&previous);  // the event belongs to the streams' device
  if (e == cudaSuccess && previous != device_index) {
    e = cudaSetDevice(device_index);
    switched = e == cudaSuccess;
  }
  cudaEvent_t& event = (*events)[device_index];
  if (e == cudaSuccess && !event) e = cudaEventCreateWithFlags(&event, cudaEventDisableTiming);
  if (e == cudaSuccess) e = cudaEventRecord(event, producer);
  if (e == cudaSuccess) e = cudaStreamWaitEvent(consumer, event, 0);
  if (switched) (void)cudaSetDevice(previous);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    throw Error(cat("octet.Array.__dlpack__: ordering the consumer's stream after octet's: ", cudaGetErrorString(e)));
  }
}

// Enqueues on octet's current stream of the device (where a free is enqueued) a wait for the
// work queued so far on `consumer`. Runs in deleters (any thread, maybe at exit): throws nothing.
void wait_for_consumer(int device_index, cudaStream_t consumer) noexcept {
  int previous = -1;
  if (cudaGetDevice(&previous) != cudaSuccess || (previous != device_index && cudaSetDevice(device_index) != cudaSuccess)) {
    (void)cudaGetLastError();
    return;
  }
  try {
    cudaStream_t ours = current_stream(device_index);
    cudaEvent_t event = nullptr;
    if (ours != consumer && cudaEventCreateWithFlags(&event, cudaEventDisableTiming) == cudaSuccess) {
      if (cudaEventRecord(event, consumer) == cudaSuccess) (void)cudaStreamWaitEvent(ours, event, 0);
      (void)cudaEventDestroy(event);
    }
  } catch (...) {
  }
  (void)cudaGetLastError();
  if (previous != device_index) (void)cudaSetDevice(previous);
}

// An export to a consumer on another stream: its deleter is wrapped so that, when the consumer
// lets go, octet's free waits for what the consumer queued on its stream until then (octet's
// memory is otherwise reused on octet's stream while the consumer's kernels may still read it).
template <class Managed>
struct FreeAfterConsumer {
  void* manager_ctx;
  void (*deleter)(Managed*);
  cudaStream_t consumer;
  int device_index;
};

template <class Managed>
void free_after_consumer(Managed* managed) {
  auto* f = static_cast<FreeAfterConsumer<Managed>*>(managed->manager_ctx);
  managed->manager_ctx = f->manager_ctx;
  managed->deleter = f->deleter;
  wait_for_consumer(f->device_index, f->consumer);
  delete f;
  if (managed->deleter) managed->deleter(managed);
}

// The capsule of an export: bf16/fp8 as unsigned integers when `bits` (for NumPy), the free
// ordered after `consumer` when given.
template <class Managed>
nb::object capsule_of(Managed* managed, const char* name, PyCapsule_Destructor destroy, const BitsType* bits,
                      int device_index, std::optional<cudaStream_t> consumer) {
  if (bits) managed->dl_tensor.dtype = DLDataType{kDLUInt, bits->dl.bits, 1};
  if (consumer) {
    managed->manager_ctx = new FreeAfterConsumer<Managed>{managed->manager_ctx, managed->deleter, *consumer, device_index};
    managed->deleter = free_after_consumer<Managed>;
  }
  PyObject* cap = PyCapsule_New(managed, name, destroy);
  if (!cap) {
    managed->deleter(managed);
    throw nb::python_error();
  }
  return nb::steal(cap);
}

// octet::from_dlpack, its refusal prefixed with the function and argument it was for.
template <class Managed>
Tensor imported(Managed* managed, std::string_view op, std::string_view arg) {
  try {
    return from_dlpack(managed);
  } catch (const Error& e) {
    throw Error(cat(op, ": argument '", arg, "': ", e.what()));
  }
}

std::unordered_map<PyTypeObject*, ArrayLibrary>& library_cache() {
  static auto* cache = new std::unordered_map<PyTypeObject*, ArrayLibrary>();  // lives as long as the types
  return *cache;
}

}  // namespace

// A tensor octet hands out: exports itself through DLPack; `bits` exports bf16/fp8 as unsigned
// integers of the same size (for NumPy).
struct Array {
  Tensor tensor;
  bool bits = false;
};

int64_t dlpack_stream_of(int device_index) {
  cudaStream_t s = current_stream(device_index);
  if (s == nullptr || s == cudaStreamLegacy) return 1;
  if (s == cudaStreamPerThread) return 2;
  return static_cast<int64_t>(reinterpret_cast<intptr_t>(s));
}

ArrayLibrary library_of(nb::handle array) {
  PyTypeObject* type = Py_TYPE(array.ptr());
  auto& cache = library_cache();
  auto it = cache.find(type);
  if (it != cache.end()) return it->second;
  nb::object module = nb::handle(reinterpret_cast<PyObject*>(type)).attr("__module__");
  ArrayLibrary lib = library_of_module_name(module_root(nb::cast<std::string_view>(module)));
  Py_INCREF(type);  // the cache keeps the type alive
  cache.emplace(type, lib);
  return lib;
}

ArrayLibrary library_like(nb::handle like) {
  if (like.is_none()) return library_of_module_name("numpy");
  if (PyModule_Check(like.ptr())) {
    ArrayLibrary lib;
    lib.from_dlpack = like.attr("from_dlpack");
    lib.numpy = like.is(numpy_module());
    return lib;
  }
  return library_of(like);
}

Tensor import_array(nb::handle array, std::string_view op, std::string_view arg) {
  if (nb::isinstance<Array>(array)) return nb::cast<Array&>(array).tensor;
  if (!nb::hasattr(array, "__dlpack__"))
    throw ArrayTypeError(cat(op, ": argument '", arg, "': expected an array with __dlpack__, got an object of type ",
                             nb::cast<std::string_view>(nb::type_name(array.type()))));
  const bool numpy = library_of(array).numpy;
  const BitsType* bits = numpy ? bits_type_of(array) : nullptr;
  nb::object source = bits ? array.attr("view")(bits->bits) : nb::borrow(array);

  nb::object stream = nb::none();
  if (!numpy) {
    nb::tuple device = nb::cast<nb::tuple>(source.attr("__dlpack_device__")());
    const int type = nb::cast<int>(device[0]);
    if (type == kDLCUDA || type == kDLCUDAManaged) stream = nb::int_(dlpack_stream_of(nb::cast<int>(device[1])));
  }
  nb::object capsule;
  try {
    capsule = source.attr("__dlpack__")(nb::arg("stream") = stream, nb::arg("max_version") = nb::make_tuple(1, 1));
  } catch (nb::python_error& e) {
    if (!e.matches(PyExc_TypeError)) {
      if (e.matches(PyExc_BufferError))
        throw ArrayTypeError(cat(op, ": argument '", arg, "': expected an array octet can take, got one whose __dlpack__ refused: ", e.what()));
      throw;
    }
    capsule = source.attr("__dlpack__")(nb::arg("stream") = stream);  // a producer before DLPack 1.0
  }
  PyObject* cap = capsule.ptr();
  if (PyCapsule_IsValid(cap, kVersioned)) {
    auto* managed = static_cast<DLManagedTensorVersioned*>(PyCapsule_GetPointer(cap, kVersioned));
    if (bits) managed->dl_tensor.dtype = bits->dl;
    Tensor t = imported(managed, op, arg);
    PyCapsule_SetName(cap, kUsedVersioned);
    return t;
  }
  if (PyCapsule_IsValid(cap, kLegacy)) {
    auto* managed = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(cap, kLegacy));
    if (bits) managed->dl_tensor.dtype = bits->dl;
    Tensor t = imported(managed, op, arg);
    PyCapsule_SetName(cap, kUsedLegacy);
    return t;
  }
  throw ArrayTypeError(cat(op, ": argument '", arg, "': expected __dlpack__ to return a DLPack capsule, got ",
                           nb::cast<std::string_view>(nb::type_name(capsule.type()))));
}

Tensor import_optional(nb::handle array, std::string_view op, std::string_view arg) {
  return array.is_none() ? Tensor() : import_array(array, op, arg);
}

Tensor import_writable(nb::handle array, std::string_view op, std::string_view arg) {
  Tensor t = import_array(array, op, arg);
  if (is_read_only(t)) fail_arg(op, arg, "a writable array", "a read-only one");
  return t;
}

nb::object export_like(const Tensor& t, nb::handle like) { return export_tensor(t, library_like(like)); }

nb::object export_tensor(const Tensor& t, const ArrayLibrary& library) {
  if (!t.defined()) return nb::none();
  if (library.from_dlpack.is_none() || (library.numpy && !t.device().is_cpu())) return nb::cast(Array{t, false});
  if (library.numpy) {
    if (const BitsType* b = bits_type_of(t.dtype())) {
      nb::object type = ml_dtypes_type(*b);
      return library.from_dlpack(nb::cast(Array{t, true})).attr("view")(type);
    }
  }
  return library.from_dlpack(nb::cast(Array{t, false}));
}

void bind_interop(nb::module_& m) {
  nb::class_<Array>(m, "Array",
      "A tensor octet made, exported to any array library without a copy through DLPack "
      "(numpy.from_dlpack, torch.from_dlpack, ...). Functions return it when the caller's "
      "library cannot be told or cannot hold the result (a CUDA result for NumPy).")
      .def("__dlpack__",
           [](const Array& a, nb::handle stream, nb::handle max_version, nb::handle dl_device, nb::handle copy) {
             const Device dev = a.tensor.device();
             if (!copy.is_none() && nb::cast<bool>(copy))
               throw nb::buffer_error("octet.Array.__dlpack__: copy=True: octet exports without copies");
             if (!dl_device.is_none()) {
               nb::tuple want = nb::cast<nb::tuple>(dl_device);
               const int type = nb::cast<int>(want[0]), index = nb::cast<int>(want[1]);
               const bool same = dev.is_cpu() ? type == kDLCPU : (type == kDLCUDA && index == dev.index);
               if (!same) throw nb::buffer_error("octet.Array.__dlpack__: dl_device differs from the array's device");
             }
             std::optional<cudaStream_t> consumer;  // another stream the consumer uses the export on
             if (dev.is_cuda()) {
               if (stream.is_none() || nb::cast<int64_t>(stream) != -1) {
                 const cudaStream_t c = consumer_stream(stream);
                 order_after_octet(dev.index, c);
                 if (c != current_stream(dev.index)) consumer = c;
               }
             } else if (!stream.is_none()) {
               throw nb::buffer_error("octet.Array.__dlpack__: stream must be None for a CPU array");
             }
             const BitsType* b = a.bits ? bits_type_of(a.tensor.dtype()) : nullptr;
             const bool versioned = !max_version.is_none() && nb::cast<int>(nb::cast<nb::tuple>(max_version)[0]) >= 1;
             if (versioned) return capsule_of(to_dlpack(a.tensor), kVersioned, destroy_versioned, b, dev.index, consumer);
             return capsule_of(to_dlpack_legacy(a.tensor), kLegacy, destroy_legacy, b, dev.index, consumer);
           },
           nb::kw_only(), nb::arg("stream") = nb::none(), nb::arg("max_version") = nb::none(),
           nb::arg("dl_device") = nb::none(), nb::arg("copy") = nb::none())
      .def("__dlpack_device__",
           [](const Array& a) {
             const Device dev = a.tensor.device();
             return dev.is_cpu() ? nb::make_tuple(int(kDLCPU), 0) : nb::make_tuple(int(kDLCUDA), dev.index);
           })
      .def_prop_ro("shape", [](const Array& a) {
             nb::list shape;
             for (int64_t s : a.tensor.shape()) shape.append(s);
             return nb::tuple(shape);
           })
      .def_prop_ro("dtype", [](const Array& a) { return std::string(dtype_name(a.tensor.dtype())); })
      .def_prop_ro("device", [](const Array& a) { return a.tensor.device().str(); })
      .def_prop_ro("data_ptr", [](const Array& a) { return reinterpret_cast<uintptr_t>(a.tensor.data()); },
                   "Address of the first element (a device address for CUDA arrays).")
      .def_prop_ro("read_only", [](const Array& a) { return is_read_only(a.tensor); })
      .def("__repr__", [](const Array& a) { return "octet.Array(" + a.tensor.str() + ")"; });

  m.def("asarray", [](nb::handle x) { return Array{import_array(x, "octet.asarray", "x"), false}; }, nb::arg("x"),
        "x as an octet.Array, without a copy (the same memory; DLPack and ml_dtypes rules of every function).");
  m.def("from_dlpack", [](nb::handle x, nb::handle like) { return export_tensor(import_array(x, "octet.from_dlpack", "x"), library_like(like)); },
        nb::arg("x"), nb::arg("like") = nb::none(),
        "x without a copy, as an array of `like`'s library (an array or a module; None: NumPy for CPU arrays, else octet.Array).");
}

}  // namespace octet::python
