// Embedding: Tensor::from_blob over memory the test owns (checks, deleter exactly once, in-place
// ops where the memory lies), narrow/reshape views (storage, version counter, gradients), DLPack
// export and import (round trips keep the data pointer, every refused input, the read-only flag,
// the element-type codes) and StreamGuard (the caller's stream, nothing on octet's own).
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>

#include "tests/helpers.hpp"

using namespace octet;

namespace {

// Memory a caller owns: 64-byte aligned host memory, or cudaMalloc on the device's GPU. put and
// get use cudaMemcpy on the legacy default stream, which octet's non-blocking streams do not wait
// for: put waits for its copy, get for octet's work, as a caller must.
struct CallerMemory {
  void* ptr = nullptr;
  Device device;
  CallerMemory(size_t bytes, Device d) : device(d) {
    if (d.is_cpu()) {
      ptr = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
      return;
    }
    int current = 0;
    REQUIRE(cudaGetDevice(&current) == cudaSuccess);
    REQUIRE(cudaSetDevice(d.index) == cudaSuccess);
    const cudaError_t e = cudaMalloc(&ptr, bytes);
    REQUIRE(cudaSetDevice(current) == cudaSuccess);
    REQUIRE(e == cudaSuccess);
  }
  ~CallerMemory() {
    if (device.is_cpu()) std::free(ptr);
    else (void)cudaFree(ptr);
  }
  CallerMemory(const CallerMemory&) = delete;
  CallerMemory& operator=(const CallerMemory&) = delete;
  template <class T> void put(const std::vector<T>& values) {
    if (device.is_cpu()) std::memcpy(ptr, values.data(), values.size() * sizeof(T));
    else REQUIRE(cudaMemcpy(ptr, values.data(), values.size() * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess);
    if (device.is_cuda()) REQUIRE(cudaDeviceSynchronize() == cudaSuccess);  // the DMA may still run otherwise
  }
  template <class T> std::vector<T> get(size_t count) {
    std::vector<T> out(count);
    synchronize(device);
    if (device.is_cpu()) std::memcpy(out.data(), ptr, count * sizeof(T));
    else REQUIRE(cudaMemcpy(out.data(), ptr, count * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
    return out;
  }
};

// A deleter that counts its calls and checks the pointer it gets.
struct Counted {
  int calls = 0;
  std::function<void(void*)> deleter(void* expected) {
    return [this, expected](void* p) {
      ++calls;
      CHECK(p == expected);
    };
  }
};

void wraps_without_copy(Device d) {
  CallerMemory mem(6 * sizeof(float), d);
  mem.put(std::vector<float>{1, 2, 3, 4, 5, 6});
  Tensor t = Tensor::from_blob(mem.ptr, {2, 3}, DType::f32, d);
  CHECK(t.data() == mem.ptr);
  CHECK(t.device() == d);
  CHECK(t.to_vector<float>() == std::vector<float>{1, 2, 3, 4, 5, 6});
  // in-place ops write where the memory lies
  t.fill_(2.0);
  CHECK(mem.get<float>(6) == std::vector<float>(6, 2.0f));
  axpy_(t, 3.0, Tensor::ones({2, 3}, DType::f32, d));
  CHECK(mem.get<float>(6) == std::vector<float>(6, 5.0f));
  scale_by_(t, Tensor::full({}, 0.5, DType::f32, d));
  CHECK(mem.get<float>(6) == std::vector<float>(6, 2.5f));
  t.copy_(Tensor::from_vector(std::vector<double>{6, 5, 4, 3, 2, 1}, {2, 3}, d));
  CHECK(mem.get<float>(6) == std::vector<float>{6, 5, 4, 3, 2, 1});
  CHECK(t.data() == mem.ptr);
}

void deleter_runs_once(Device d) {
  CallerMemory mem(8 * sizeof(float), d);
  Counted counted;
  {
    Tensor t = Tensor::from_blob(mem.ptr, {8}, DType::f32, d, counted.deleter(mem.ptr));
    Tensor alias = t;
    Tensor view = t.narrow(0, 2, 4).reshape({2, 2});
    Tensor detached = t.detach();
    t = Tensor();
    alias = Tensor();
    detached = Tensor();
    CHECK(counted.calls == 0);  // the view still holds the storage
    view.fill_(1.0);
    CHECK(view.to_vector<float>() == std::vector<float>(4, 1.0f));
  }
  CHECK(counted.calls == 1);
  // no deleter: nothing runs, the caller keeps the memory
  { Tensor t = Tensor::from_blob(mem.ptr, {8}, DType::f32, d); }
  CHECK(counted.calls == 1);
}

void quantize_and_clip_in_place(Device d) {
  const int64_t n = 5000;
  manual_seed(11);
  const Tensor owned = randn({n}, DType::f32, d);
  CallerMemory mem(n * sizeof(float), d);
  mem.put(owned.to_vector<float>());
  Tensor wrapped = Tensor::from_blob(mem.ptr, {n}, DType::f32, d);
  const Quantized a = quantize_blockwise(owned, Code(), 256), b = quantize_blockwise(wrapped, Code(), 256);
  CHECK(test::bitwise_equal(a.codes, b.codes));
  CHECK(test::bitwise_equal(a.state.absmax, b.state.absmax));
  // the round trip written back into the caller's buffer, then clipped there
  wrapped.copy_(dequantize_blockwise(b.codes, b.state));
  CHECK(wrapped.data() == mem.ptr);
  CHECK(test::bitwise_equal(wrapped, dequantize_blockwise(a.codes, a.state)));
  Tensor history = Tensor::zeros({100}, DType::f32, d);
  for (int64_t step = 1; step <= 3; ++step) percentile_clipping(wrapped, history, step);
  Tensor big = scale(wrapped, 10.0);
  const Tensor reference = big.clone();
  Tensor big_wrapped_mem = Tensor::from_blob(mem.ptr, {n}, DType::f32, d);
  big_wrapped_mem.copy_(big);
  const ClipResult r = percentile_clipping(big_wrapped_mem, history, 4);
  CHECK(r.scale.item() < 1.0);
  scale_by_(big_wrapped_mem, r.scale);
  std::vector<float> expected = reference.to_vector<float>();
  const float s = static_cast<float>(r.scale.item());
  for (float& v : expected) v *= s;
  CHECK(mem.get<float>(n) == expected);
}

}  // namespace

OCTET_TEST_BOTH("from_blob wraps caller memory; in-place ops write it where it lies", wraps_without_copy)
OCTET_TEST_BOTH("from_blob deleter runs exactly once, when the last reference (a view) goes", deleter_runs_once)
OCTET_TEST_BOTH("quantize_blockwise, dequantize and percentile clipping on wrapped memory", quantize_and_clip_in_place)

TEST_CASE("from_blob checks, and the deleter does not run when one fails") {
  alignas(64) float host[16] = {};
  Counted counted;
  auto deleter = counted.deleter(host);
  CHECK_THROWS_WITH_AS(Tensor::from_blob(nullptr, {2, 3}, DType::f32, Device::cpu(), deleter),
                       "Tensor::from_blob: argument 'data': expected a pointer to 6 elements of f32 for shape (2, 3), "
                       "got a null pointer",
                       Error);
  CHECK_THROWS_WITH_AS(Tensor::from_blob(nullptr, {}, DType::f32, Device::cpu(), deleter),
                       doctest::Contains("expected a pointer to 1 elements of f32 for shape (), got a null pointer"),
                       Error);
  void* odd = reinterpret_cast<char*>(host) + 2;
  CHECK_THROWS_WITH_AS(Tensor::from_blob(odd, {3}, DType::f32, Device::cpu(), deleter),
                       doctest::Contains("Tensor::from_blob: argument 'data': expected an address that is a multiple "
                                         "of 4 (the size of f32), got address "),
                       Error);
  CHECK_THROWS_WITH_AS(Tensor::from_blob(odd, {3}, DType::f32, Device::cpu(), deleter),
                       doctest::Contains(", 2 bytes past one"), Error);
  CHECK_NOTHROW(Tensor::from_blob(odd, {3}, DType::f16, Device::cpu()));  // 2-byte elements may sit there
  CHECK_THROWS_WITH_AS(Tensor::from_blob(host, {int64_t{1} << 62, 4}, DType::f32, Device::cpu(), deleter),
                       "Tensor::from_blob: argument 'shape': expected at most 2^63 - 1 bytes of f32, got "
                       "(4611686018427387904, 4), more than that",
                       Error);
  CHECK_THROWS_WITH_AS(Tensor::from_blob(host, {-1}, DType::f32, Device::cpu(), deleter),
                       "Tensor::from_blob: argument 'shape': expected non-negative sizes, got (-1,)", Error);
  void* top = reinterpret_cast<void*>(~uintptr_t{0} - 63);  // 64 bytes below the end of the address space
  CHECK_THROWS_WITH_AS(Tensor::from_blob(top, {32}, DType::f32, Device::cpu(), deleter),
                       doctest::Contains("Tensor::from_blob: argument 'shape': expected a size that fits the address "
                                         "space after "),
                       Error);
  CHECK(counted.calls == 0);
  // empty tensors never touch their pointer; the deleter still runs once
  {
    Tensor e = Tensor::from_blob(nullptr, {0, 3}, DType::f32, Device::cpu(), counted.deleter(nullptr));
    CHECK(e.numel() == 0);
    CHECK(e.to_vector<float>().empty());
  }
  CHECK(counted.calls == 1);
}

OCTET_CUDA_TEST("from_blob refuses memory of another kind than its device") {
  const Device gpu = Device::cuda(0);
  CallerMemory device_mem(64, gpu);
  alignas(64) float host[16] = {};
  Counted counted;
  CHECK_THROWS_WITH_AS(Tensor::from_blob(device_mem.ptr, {4}, DType::f32, Device::cpu(), counted.deleter(nullptr)),
                       "Tensor::from_blob: argument 'data': expected host or managed memory (the tensor is on cpu), "
                       "got device memory of cuda:0",
                       Error);
  CHECK_THROWS_WITH_AS(Tensor::from_blob(host, {4}, DType::f32, gpu, counted.deleter(nullptr)),
                       "Tensor::from_blob: argument 'data': expected device or managed memory of cuda:0, got host "
                       "memory",
                       Error);
  void* pinned = nullptr;
  REQUIRE(cudaMallocHost(&pinned, 64) == cudaSuccess);
  CHECK_THROWS_WITH_AS(Tensor::from_blob(pinned, {4}, DType::f32, gpu),
                       doctest::Contains("expected device or managed memory of cuda:0, got pinned host memory"), Error);
  CHECK(Tensor::from_blob(pinned, {4}, DType::f32, Device::cpu()).data() == pinned);
  void* managed = nullptr;
  REQUIRE(cudaMallocManaged(&managed, 64) == cudaSuccess);
  Tensor on_gpu = Tensor::from_blob(managed, {16}, DType::f32, gpu);
  on_gpu.fill_(3.0);
  synchronize(gpu);
  CHECK(Tensor::from_blob(managed, {16}, DType::f32, Device::cpu()).to_vector<float>() == std::vector<float>(16, 3.0f));
  on_gpu = Tensor();
  CHECK(cudaFree(managed) == cudaSuccess);
  CHECK(cudaFreeHost(pinned) == cudaSuccess);
  CHECK(counted.calls == 0);
}

TEST_CASE("from_blob refuses device memory of another GPU [cuda]" * doctest::skip(cuda_device_count() < 2)) {
  CallerMemory second(64, Device::cuda(1));
  CHECK_THROWS_WITH_AS(Tensor::from_blob(second.ptr, {4}, DType::f32, Device::cuda(0)),
                       "Tensor::from_blob: argument 'data': expected device or managed memory of cuda:0, got device "
                       "memory of cuda:1",
                       Error);
  CHECK(Tensor::from_blob(second.ptr, {4}, DType::f32, Device::cuda(1)).data() == second.ptr);
}

TEST_CASE("narrow and reshape are views: shared storage, errors") {
  Tensor base = Tensor::from_vector(std::vector<float>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, {4, 3});
  Tensor rows = base.narrow(0, 1, 2);
  CHECK(rows.shape() == Shape{2, 3});
  CHECK(rows.data() == static_cast<float*>(base.data()) + 3);
  CHECK(rows.to_vector<float>() == std::vector<float>{3, 4, 5, 6, 7, 8});
  CHECK(base.narrow(-2, -1, 1).to_vector<float>() == std::vector<float>{9, 10, 11});
  Tensor flat = rows.reshape({-1}).narrow(0, 4, 2);  // a parameter inside a flat buffer
  CHECK(flat.to_vector<float>() == std::vector<float>{7, 8});
  flat.fill_(-1.0);
  CHECK(base.to_vector<float>() == std::vector<float>{0, 1, 2, 3, 4, 5, 6, -1, -1, 9, 10, 11});
  CHECK(base.narrow(0, 4, 0).numel() == 0);
  CHECK_THROWS_WITH_AS(base.narrow(1, 0, 1),
                       "Tensor::narrow: argument 'dim': expected 0 or -2 (a view along another dimension would not be "
                       "contiguous), got 1",
                       Error);
  CHECK_THROWS_WITH_AS(base.narrow(0, 5, 0), "Tensor::narrow: argument 'start': expected a start in [-4, 4], got 5",
                       Error);
  CHECK_THROWS_WITH_AS(base.narrow(0, 3, 2),
                       "Tensor::narrow: argument 'length': expected a length in [0, 1] (size 4 from start 3), got 2",
                       Error);
  CHECK_THROWS_WITH_AS(base.narrow(0, 0, -1), doctest::Contains("argument 'length'"), Error);
  CHECK_THROWS_WITH_AS(Tensor::full({}, 1.0).narrow(0, 0, 1),
                       "Tensor::narrow: argument 'self': expected a tensor with at least 1 dimension, got f32() on cpu",
                       Error);
  CHECK_THROWS_WITH_AS(Tensor().narrow(0, 0, 1), doctest::Contains("expected a defined tensor"), Error);
}

TEST_CASE("an in-place write through a view bumps the version saved tensors check") {
  Tensor w = Tensor::from_vector(std::vector<double>{1, 2, 3, 4}, {2, 2}).requires_grad_();
  Tensor x = Tensor::from_vector(std::vector<double>{5, 6, 7, 8}, {2, 2});
  Tensor y = sum(mul(w, x));  // saves x for w's gradient
  const uint64_t before = x.impl()->storage->version;
  x.narrow(0, 1, 1).reshape({2}).fill_(0.0);
  CHECK(x.impl()->storage->version == before + 1);
  CHECK_THROWS_WITH_AS(backward(y), doctest::Contains("was written in place after the forward"), Error);
  // narrow is differentiable: the gradient lands in the narrowed rows
  Tensor p = Tensor::from_vector(std::vector<double>{1, 2, 3, 4, 5, 6, 7, 8}, {4, 2}).requires_grad_();
  backward(sum(p.narrow(0, 1, 2)));
  CHECK(p.grad().to_vector<double>() == std::vector<double>{0, 0, 1, 1, 1, 1, 0, 0});
}

TEST_CASE("tensor and runtime errors: from_blob and StreamGuard on devices this machine does not have") {
  const int n = cuda_device_count();
  alignas(64) float host[4] = {};
  Counted counted;
  for (int index : {n, -1}) {
    CAPTURE(index);
    const std::string given =
        n == 0 ? ": no CUDA device is available on this machine (cuda_device_count() == 0)"
               : cat(": argument 'device': expected cuda:0 .. cuda:", n - 1, ", got cuda:", index);
    CHECK_THROWS_WITH_AS(Tensor::from_blob(host, {4}, DType::f32, Device::cuda(index), counted.deleter(host)),
                         ("Tensor::from_blob" + given).c_str(), Error);
    CHECK_THROWS_WITH_AS(StreamGuard(Device::cuda(index), nullptr), ("StreamGuard" + given).c_str(), Error);
  }
  CHECK(counted.calls == 0);
  StreamGuard on_cpu(Device::cpu(), nullptr);  // nothing to do on the CPU, never an error
}

namespace {

// A DLPack producer of the test's own: a managed tensor over caller memory whose deleter counts.
template <class Managed>
struct Produced {
  Managed managed{};
  int64_t shape[4] = {};
  int64_t strides[4] = {};
  int deleted = 0;
  Produced(void* data, Shape dims, DLDataType type, DLDevice device) {
    DLTensor& dl = managed.dl_tensor;
    dl.data = data;
    dl.device = device;
    dl.ndim = static_cast<int32_t>(dims.size());
    dl.dtype = type;
    for (size_t i = 0; i < dims.size(); ++i) shape[i] = dims[i];
    dl.shape = shape;
    dl.strides = nullptr;
    managed.manager_ctx = this;
    managed.deleter = [](Managed* self) { ++static_cast<Produced*>(self->manager_ctx)->deleted; };
    if constexpr (requires { managed.version; }) managed.version = {1, 1};
  }
};

constexpr DLDataType kF32{kDLFloat, 32, 1};
constexpr DLDevice kHost{kDLCPU, 0};

template <class Managed>
Managed* export_as(const Tensor& t) {
  if constexpr (std::is_same_v<Managed, DLManagedTensorVersioned>) return to_dlpack(t);
  else return to_dlpack_legacy(t);
}

template <class Managed>
void round_trip(Device d) {
  Tensor t = Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3}, d);
  const long references = t.impl_ptr()->storage.use_count();
  Managed* managed = export_as<Managed>(t);
  const DLTensor& dl = managed->dl_tensor;
  CHECK(dl.data == t.data());
  CHECK(dl.byte_offset == 0);
  CHECK(dl.ndim == 2);
  CHECK(dl.shape[0] == 2);
  CHECK(dl.shape[1] == 3);
  CHECK(dl.strides[0] == 3);
  CHECK(dl.strides[1] == 1);
  CHECK(dl.dtype.code == kDLFloat);
  CHECK(dl.dtype.bits == 32);
  CHECK(dl.dtype.lanes == 1);
  CHECK(dl.device.device_type == (d.is_cuda() ? kDLCUDA : kDLCPU));
  CHECK(dl.device.device_id == d.index);
  if constexpr (std::is_same_v<Managed, DLManagedTensorVersioned>) {
    CHECK(managed->version.major == 1);
    CHECK(managed->version.minor == 1);
    CHECK(managed->flags == 0);
  }
  CHECK(t.impl_ptr()->storage.use_count() == references + 1);  // the export holds one reference
  {
    Tensor back = from_dlpack(managed);
    CHECK(back.data() == t.data());
    CHECK(back.shape() == t.shape());
    CHECK(back.device() == d);
    back.narrow(0, 0, 1).fill_(0.0);  // writable, and written where t lies
    CHECK(t.to_vector<float>() == std::vector<float>{0, 0, 0, 4, 5, 6});
    CHECK(!is_read_only(back));
  }
  CHECK(t.impl_ptr()->storage.use_count() == references);  // the importer ran the export's deleter
  // an export the consumer only deletes
  Managed* unused = export_as<Managed>(t);
  CHECK(t.impl_ptr()->storage.use_count() == references + 1);
  unused->deleter(unused);
  CHECK(t.impl_ptr()->storage.use_count() == references);
}

template <class Managed>
void imports_foreign(Device d) {
  CallerMemory mem(8 * sizeof(float), d);
  mem.put(std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8});
  const DLDevice where = d.is_cuda() ? DLDevice{kDLCUDA, d.index} : kHost;
  Produced<Managed> produced(static_cast<char*>(mem.ptr) + 0, {2, 2}, kF32, where);
  produced.managed.dl_tensor.byte_offset = 4 * sizeof(float);  // the second half
  {
    Tensor t = from_dlpack(&produced.managed);
    CHECK(t.data() == static_cast<float*>(mem.ptr) + 4);
    CHECK(t.to_vector<float>() == std::vector<float>{5, 6, 7, 8});
    Tensor view = t.narrow(0, 1, 1);
    t = Tensor();
    CHECK(produced.deleted == 0);
    view.fill_(9.0);
  }
  CHECK(produced.deleted == 1);
  CHECK(mem.get<float>(8) == std::vector<float>{1, 2, 3, 4, 5, 6, 9, 9});
}

}  // namespace

OCTET_TEST_BOTH("DLPack versioned round trip keeps the data pointer and releases the export",
                round_trip<DLManagedTensorVersioned>)
OCTET_TEST_BOTH("DLPack legacy round trip keeps the data pointer and releases the export", round_trip<DLManagedTensor>)
OCTET_TEST_BOTH("DLPack versioned import of a foreign tensor: byte_offset, deleter once",
                imports_foreign<DLManagedTensorVersioned>)
OCTET_TEST_BOTH("DLPack legacy import of a foreign tensor: byte_offset, deleter once", imports_foreign<DLManagedTensor>)

TEST_CASE("DLPack element types: every octet dtype both ways, float8 codes of DLPack 1.1") {
  struct Case {
    DType dtype;
    uint8_t code, bits;
  };
  const Case cases[] = {{DType::f32, kDLFloat, 32}, {DType::f64, kDLFloat, 64}, {DType::f16, kDLFloat, 16},
                        {DType::bf16, kDLBfloat, 16}, {DType::u8, kDLUInt, 8}, {DType::i32, kDLInt, 32},
                        {DType::i64, kDLInt, 64}, {DType::f8_e4m3, 10, 8}, {DType::f8_e5m2, 12, 8}};
  for (const Case& c : cases) {
    CAPTURE(dtype_name(c.dtype));
    Tensor t = Tensor::zeros({3}, c.dtype);
    DLManagedTensorVersioned* managed = to_dlpack(t);
    CHECK(managed->dl_tensor.dtype.code == c.code);
    CHECK(managed->dl_tensor.dtype.bits == c.bits);
    CHECK(from_dlpack(managed).dtype() == c.dtype);
  }
  const char* undefined = ": argument 't': expected a defined tensor, got an undefined (default-constructed) tensor";
  CHECK_THROWS_WITH_AS(to_dlpack(Tensor()), (std::string("to_dlpack") + undefined).c_str(), Error);
  CHECK_THROWS_WITH_AS(to_dlpack_legacy(Tensor()), (std::string("to_dlpack_legacy") + undefined).c_str(), Error);
  CHECK_THROWS_WITH_AS(is_read_only(Tensor()), (std::string("is_read_only") + undefined).c_str(), Error);
  CHECK(kDLFloat8_e4m3fn == 10);
  CHECK(kDLFloat8_e5m2 == 12);
}

TEST_CASE("DLPack import refuses what octet cannot take without a copy, naming what was given") {
  alignas(64) float host[16] = {};
  using P = Produced<DLManagedTensorVersioned>;
  const std::map<uint8_t, const char*> code_names{
      {kDLFloat8_e4m3, "float8_e4m3"}, {kDLFloat8_e4m3fnuz, "float8_e4m3fnuz"}, {kDLBool, "bool"}, {kDLFloat, "float"}};
  auto refused = [](P& p, const char* message) {
    CHECK_THROWS_WITH_AS(from_dlpack(&p.managed), message, Error);
    CHECK(p.deleted == 0);  // ownership stays with the caller
  };
  CHECK_THROWS_WITH_AS(from_dlpack(static_cast<DLManagedTensorVersioned*>(nullptr)),
                       "from_dlpack: argument 'managed': expected a DLManagedTensorVersioned, got a null pointer",
                       Error);
  CHECK_THROWS_WITH_AS(from_dlpack(static_cast<DLManagedTensor*>(nullptr)),
                       "from_dlpack: argument 'managed': expected a DLManagedTensor, got a null pointer", Error);
  {
    P p(host, {2, 3}, kF32, kHost);
    p.managed.version = {2, 0};
    refused(p, "from_dlpack: argument 'managed->version': expected DLPack version 1.x, got version 2.0");
  }
  {
    P p(host, {2, 3}, kF32, kHost);
    p.strides[0] = 1;
    p.strides[1] = 2;
    p.managed.dl_tensor.strides = p.strides;
    refused(p, "from_dlpack: argument 'dl_tensor.strides': expected compact row-major strides (3, 1) (any for a "
               "size-1 dimension; octet does not copy), got strides (1, 2) for shape (2, 3)");
    p.strides[0] = 6;  // padded rows
    p.strides[1] = 1;
    refused(p, "from_dlpack: argument 'dl_tensor.strides': expected compact row-major strides (3, 1) (any for a "
               "size-1 dimension; octet does not copy), got strides (6, 1) for shape (2, 3)");
  }
  {
    P p(host, {2, 3}, kF32, kHost);
    p.managed.dl_tensor.byte_offset = 2;
    refused(p, "from_dlpack: argument 'dl_tensor.byte_offset': expected a multiple of 4 (the size of f32), got 2");
  }
  {
    P p(host, {2}, DLDataType{kDLComplex, 64, 1}, kHost);
    refused(p, "from_dlpack: argument 'dl_tensor.dtype': expected float 16/32/64, bfloat 16, uint 8, int 32/64, "
               "float8_e4m3fn or float8_e5m2 bits, 1 lane, got code 5 (complex), 64 bits, 1 lane");
  }
  {
    P p(host, {2}, DLDataType{kDLFloat, 32, 4}, kHost);
    refused(p, "from_dlpack: argument 'dl_tensor.dtype': expected float 16/32/64, bfloat 16, uint 8, int 32/64, "
               "float8_e4m3fn or float8_e5m2 bits, 1 lane, got code 2 (float), 32 bits, 4 lanes");
  }
  for (uint8_t code : {uint8_t{kDLFloat8_e4m3}, uint8_t{kDLFloat8_e4m3fnuz}, uint8_t{kDLBool}, uint8_t{kDLFloat}}) {
    P p(host, {2}, DLDataType{code, 8, 1}, kHost);
    const std::string given = cat("got code ", int(code), " (", code_names.at(code), "), 8 bits, 1 lane");
    CHECK_THROWS_WITH_AS(from_dlpack(&p.managed), doctest::Contains(given.c_str()), Error);
  }
  {
    P p(host, {2}, kF32, DLDevice{kDLROCM, 0});
    refused(p, "from_dlpack: argument 'dl_tensor.device': expected device type CPU (1), CUDA (2), CUDA host (3) or "
               "CUDA managed (13), got device type 10 (ROCm)");
  }
  {
    P p(host, {2, -3}, kF32, kHost);
    refused(p, "from_dlpack: argument 'shape': expected non-negative sizes, got (2, -3)");
    p.managed.dl_tensor.ndim = -1;
    refused(p, "from_dlpack: argument 'dl_tensor.ndim': expected ndim >= 0, got -1");
    p.managed.dl_tensor.ndim = 2;
    p.managed.dl_tensor.shape = nullptr;
    refused(p, "from_dlpack: argument 'dl_tensor.shape': expected an array of 2 sizes, got NULL");
  }
  {
    P p(nullptr, {2}, kF32, kHost);
    refused(p, "from_dlpack: argument 'data': expected a pointer to 2 elements of f32 for shape (2,), got a null "
               "pointer");
  }
  if (!cuda_available()) {
    P p(host, {2}, kF32, DLDevice{kDLCUDA, 0});
    refused(p, "from_dlpack: no CUDA device is available on this machine (cuda_device_count() == 0)");
  }
  // accepted: size-1 dimensions with any stride, NULL strides, CUDA host memory as cpu, empty with any strides
  {
    P p(host, {1, 3}, kF32, DLDevice{kDLCUDAHost, 0});
    p.strides[0] = 99;
    p.strides[1] = 1;
    p.managed.dl_tensor.strides = p.strides;
    CHECK(from_dlpack(&p.managed).device() == Device::cpu());
    CHECK(p.deleted == 1);
    P empty(host, {0, 3}, kF32, kHost);
    empty.strides[0] = 7;
    empty.strides[1] = 7;
    empty.managed.dl_tensor.strides = empty.strides;
    CHECK(from_dlpack(&empty.managed).numel() == 0);
  }
}

TEST_CASE("DLPack read-only imports: in-place writes refused, the flag kept on re-export") {
  alignas(64) float host[4] = {1, 2, 3, 4};
  Produced<DLManagedTensorVersioned> produced(host, {4}, kF32, kHost);
  produced.managed.flags = DLPACK_FLAG_BITMASK_READ_ONLY;
  Tensor t = from_dlpack(&produced.managed);
  CHECK(is_read_only(t));
  CHECK(is_read_only(t.narrow(0, 1, 2)));
  CHECK(sum(t).item() == 10.0);  // reading is fine
  const std::string refused = "argument 'self': expected a writable tensor, got f32(4,) on cpu imported read-only "
                              "(DLPack's read-only flag)";
  CHECK_THROWS_WITH_AS(t.fill_(0.0), ("Tensor::fill_: " + refused).c_str(), Error);
  CHECK_THROWS_WITH_AS(t.copy_(Tensor::zeros({4})), ("Tensor::copy_: " + refused).c_str(), Error);
  CHECK_THROWS_WITH_AS(t.narrow(0, 0, 2).zero_(), doctest::Contains("expected a writable tensor"), Error);
  CHECK_THROWS_WITH_AS(axpy_(t, 1.0, t), doctest::Contains("axpy_: argument 'y': expected a writable tensor"), Error);
  CHECK_THROWS_WITH_AS(scale_by_(t, Tensor::full({}, 0.5)),
                       doctest::Contains("scale_by_: argument 'grad': expected a writable tensor"), Error);
  DLManagedTensorVersioned* again = to_dlpack(t);
  CHECK(again->flags == DLPACK_FLAG_BITMASK_READ_ONLY);
  Tensor reimported = from_dlpack(again);
  CHECK(is_read_only(reimported));
  CHECK(!is_read_only(from_dlpack(to_dlpack(Tensor::zeros({2})))));
  CHECK_THROWS_WITH_AS(to_dlpack_legacy(t),
                       "to_dlpack_legacy: argument 't': expected a writable tensor (the legacy DLManagedTensor has no "
                       "read-only flag; use to_dlpack), got f32(4,) on cpu imported read-only",
                       Error);
  // an op that writes into its argument (the clipping history) refuses a read-only one too
  std::vector<float> history_memory(100, 0.0f);
  Produced<DLManagedTensorVersioned> history(history_memory.data(), {100}, kF32, kHost);
  history.managed.flags = DLPACK_FLAG_BITMASK_READ_ONLY;
  Tensor read_only_history = from_dlpack(&history.managed);
  CHECK_THROWS_WITH_AS(percentile_clipping(t, read_only_history, 1),
                       doctest::Contains("percentile_clipping: argument 'gnorm_vec': expected a writable tensor"),
                       Error);
  CHECK(history_memory == std::vector<float>(100, 0.0f));
  CHECK(std::vector<float>(host, host + 4) == std::vector<float>{1, 2, 3, 4});
  t = Tensor();
  reimported = Tensor();
  CHECK(produced.deleted == 1);
}

OCTET_CUDA_TEST("StreamGuard makes the caller's stream current, nests and restores") {
  const Device gpu = Device::cuda(0);
  const cudaStream_t own = current_stream(0);
  cudaStream_t first = nullptr, second = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&first, cudaStreamNonBlocking) == cudaSuccess);
  REQUIRE(cudaStreamCreateWithFlags(&second, cudaStreamNonBlocking) == cudaSuccess);
  {
    StreamGuard outer(gpu, first);
    CHECK(current_stream(0) == first);
    {
      StreamGuard inner(gpu, second);
      CHECK(current_stream(0) == second);
    }
    CHECK(current_stream(0) == first);
  }
  CHECK(current_stream(0) == own);
  CHECK(cudaStreamDestroy(first) == cudaSuccess);
  CHECK(cudaStreamDestroy(second) == cudaSuccess);
}

namespace {
// A step of an embedding trainer on wrapped memory: quantize, dequantize, clip, scale in place.
double embedded_step(Device d, void* buffer, int64_t n) {
  Tensor grad = Tensor::from_blob(buffer, {n}, DType::f32, d);
  grad.copy_(randn({n}, DType::f32, d));
  const Quantized q = quantize_blockwise(grad, Code(), 256);
  grad.copy_(dequantize_blockwise(q.codes, q.state));
  ClipState clip = ClipState::create(d);
  scale_by_(grad, percentile_clipping(grad, clip).scale);
  return max_abs(grad).item();
}
}  // namespace

// The library's own stream records (captures) whatever is enqueued on it while octet runs under
// a StreamGuard on the caller's stream: the captured graph must stay empty, and an op that waited
// on the library stream would fail the capture.
OCTET_CUDA_TEST("under a StreamGuard octet enqueues nothing on its own stream") {
  const Device gpu = Device::cuda(0);
  const int64_t n = 100003;
  CallerMemory buffer(n * sizeof(float), gpu);
  CHECK(std::isfinite(embedded_step(gpu, buffer.ptr, n)));  // lazily created state (maps, handles) exists now
  synchronize(gpu);
  const cudaStream_t own = current_stream(0);
  cudaStream_t mine = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&mine, cudaStreamNonBlocking) == cudaSuccess);
  REQUIRE(cudaStreamBeginCapture(own, cudaStreamCaptureModeRelaxed) == cudaSuccess);
  double result = NAN;
  {
    StreamGuard guard(gpu, mine);
    try {
      result = embedded_step(gpu, buffer.ptr, n);
    } catch (const Error& e) {
      FAIL_CHECK("octet failed under the guard: " << e.what());
    }
  }
  cudaGraph_t graph = nullptr;
  REQUIRE(cudaStreamEndCapture(own, &graph) == cudaSuccess);
  size_t nodes = 0;
  CHECK(cudaGraphGetNodes(graph, nullptr, &nodes) == cudaSuccess);
  CHECK(nodes == 0);
  CHECK(cudaGraphDestroy(graph) == cudaSuccess);
  CHECK(std::isfinite(result));
  CHECK(cudaStreamQuery(mine) == cudaSuccess);  // the host read waited for the caller's stream
  CHECK(cudaStreamDestroy(mine) == cudaSuccess);
}
