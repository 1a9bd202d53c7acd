// Tensor: storage (octet's own and wrapped), construction, device/dtype transfer, views (reshape,
// narrow), transpose, copy, and the argument checks of src/check.hpp.
#include "octet/tensor.hpp"

#include <cstdlib>
#include <sstream>

#include "octet/autograd.hpp"
#include "kernels/ops.cuh"
#include "src/check.hpp"
#include "src/cpu/ops.hpp"
#include "src/cuda_check.hpp"
#include "src/runtime_internal.hpp"

namespace octet {

std::string shape_str(const Shape& s) {
  std::ostringstream o;
  o << '(';
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  if (s.size() == 1) o << ',';
  o << ')';
  return o.str();
}

namespace {
// The product of the sizes into n (0 if any is 0); false when it is past 2^63 - 1.
bool sizes_product(const Shape& s, int64_t& n) {
  n = 0;
  for (int64_t d : s)
    if (d == 0) return true;
  n = 1;
  for (int64_t d : s)
    if (__builtin_mul_overflow(n, d, &n)) return false;
  return true;
}
}  // namespace

int64_t shape_numel(const Shape& s) {
  int64_t n = 0;
  if (!sizes_product(s, n)) fail_arg("shape_numel", "shape", "at most 2^63 - 1 elements", shape_str(s));
  return n;
}

Storage::Storage(size_t nbytes, Device dev) : bytes(nbytes), device(dev) {
  if (nbytes == 0) return;
  if (dev.is_cpu()) {
    const size_t rounded = (nbytes + 63) / 64 * 64;
    data = std::aligned_alloc(64, rounded);
    if (!data) throw Error(cat("out of host memory: asked for ", nbytes, " bytes"));
  } else {
    data = detail::device_alloc(nbytes, dev);
  }
}

Storage::Storage(void* external_data, size_t nbytes, Device dev, std::function<void(void*)> release)
    : data(external_data), bytes(nbytes), device(dev), external(true), deleter(std::move(release)) {}

Storage::~Storage() {
  if (external) {  // not octet's to free: hand it back to its owner
    if (deleter) deleter(data);
    return;
  }
  if (!data) return;
  if (device.is_cpu()) std::free(data);
  else detail::device_free(data, device);
}

namespace check {

std::string dtypes_str(std::initializer_list<DType> allowed) {
  std::string s;
  size_t i = 0;
  for (DType t : allowed) {
    if (i) s += (i + 1 == allowed.size()) ? " or " : ", ";
    s += dtype_name(t);
    ++i;
  }
  return s;
}

void defined(std::string_view op, std::string_view arg, const Tensor& t) {
  if (!t.defined()) fail_arg(op, arg, "a defined tensor", "an undefined (default-constructed) tensor");
}

void dtype_in(std::string_view op, std::string_view arg, const Tensor& t, std::initializer_list<DType> allowed) {
  defined(op, arg, t);
  for (DType d : allowed) if (t.dtype() == d) return;
  fail_arg(op, arg, cat("dtype ", dtypes_str(allowed)), cat("dtype ", dtype_name(t.dtype())));
}

void dtype_is(std::string_view op, std::string_view arg, const Tensor& t, DType expected) {
  defined(op, arg, t);
  if (t.dtype() != expected) fail_arg(op, arg, cat("dtype ", dtype_name(expected)), cat("dtype ", dtype_name(t.dtype())));
}

void device_is(std::string_view op, std::string_view arg, const Tensor& t, Device expected) {
  defined(op, arg, t);
  if (t.device() != expected) fail_arg(op, arg, cat("a tensor on ", expected.str()), cat("a tensor on ", t.device().str()));
}

void shape_is(std::string_view op, std::string_view arg, const Tensor& t, const Shape& expected) {
  defined(op, arg, t);
  if (t.shape() != expected) fail_arg(op, arg, cat("shape ", shape_str(expected)), cat("shape ", shape_str(t.shape())));
}

void dim_in(std::string_view op, std::string_view arg, const Tensor& t, int64_t lo, int64_t hi) {
  defined(op, arg, t);
  if (t.dim() < lo || t.dim() > hi)
    fail_arg(op, arg, lo == hi ? cat(lo, " dimensions") : cat(lo, " to ", hi, " dimensions"),
             cat(t.dim(), " dimensions, shape ", shape_str(t.shape())));
}

void usable(std::string_view op, Device device) { detail::require_device(op, device); }

void writable(std::string_view op, std::string_view arg, const Tensor& t) {
  defined(op, arg, t);
  if (t.impl()->storage->read_only)
    fail_arg(op, arg, "a writable tensor", cat(t.str(), " imported read-only (DLPack's read-only flag)"));
}

int64_t numel_of(std::string_view op, const Shape& shape, DType dtype) {
  const size_t elem = dtype_size(dtype);
  if (elem == 0) fail_arg(op, "dtype", "one of the DType enumerators", cat("the value ", static_cast<int>(dtype)));
  for (int64_t d : shape)
    if (d < 0) fail_arg(op, "shape", "non-negative sizes", shape_str(shape));
  int64_t n = 0, bytes = 0;
  if (!sizes_product(shape, n) || __builtin_mul_overflow(n, static_cast<int64_t>(elem), &bytes))
    fail_arg(op, "shape", cat("at most 2^63 - 1 bytes of ", dtype_name(dtype)), cat(shape_str(shape), ", more than that"));
  return n;
}

}  // namespace check

namespace {

// A new tensor; `op` is the public function the shape, dtype and device were given to.
Tensor make(std::string_view op, const Shape& shape, DType dtype, Device device) {
  const int64_t n = check::numel_of(op, shape, dtype);
  check::usable(op, device);
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->dtype = dtype;
  impl->storage = std::make_shared<Storage>(static_cast<size_t>(n) * dtype_size(dtype), device);
  return Tensor(std::move(impl));
}

// Copies n bytes between any two devices; waits only when the destination is the host.
void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t n) {
  if (n == 0) return;
  if (dst_dev.is_cpu() && src_dev.is_cpu()) {
    std::memcpy(dst, src, n);
    return;
  }
  const Device dev = dst_dev.is_cuda() ? dst_dev : src_dev;
  detail::DeviceGuard guard(dev);
  cudaStream_t s = detail::stream(dev);
  if (dst_dev.is_cuda() && src_dev.is_cuda() && dst_dev.index != src_dev.index) {
    // Order after pending work on the source device, then copy peer-to-peer on dst's stream.
    OCTET_CUDA_CHECK(cudaStreamSynchronize(detail::stream(src_dev)));
    OCTET_CUDA_CHECK(cudaMemcpyPeerAsync(dst, dst_dev.index, src, src_dev.index, n, s));
    return;
  }
  OCTET_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDefault, s));
  if (dst_dev.is_cpu()) OCTET_CUDA_CHECK(cudaStreamSynchronize(s));
}

}  // namespace

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) { return make("Tensor::empty", shape, dtype, device); }

namespace {
Tensor filled(std::string_view op, const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = make(op, shape, dtype, device);
  t.fill_(value);
  return t;
}
}  // namespace

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) { return filled("Tensor::zeros", shape, 0.0, dtype, device); }

Tensor Tensor::ones(const Shape& shape, DType dtype, Device device) { return filled("Tensor::ones", shape, 1.0, dtype, device); }

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  return filled("Tensor::full", shape, value, dtype, device);
}

// from_vector (the usual caller) names the op in the messages of the shape and count checks.
Tensor Tensor::from_host(const void* data, size_t count, DType dtype, const Shape& shape, Device device) {
  const int64_t n = check::numel_of("Tensor::from_vector", shape, dtype);
  if (count != static_cast<uint64_t>(n))
    fail_arg("Tensor::from_vector", "values", cat(n, " values for shape ", shape_str(shape)), cat(count, " values"));
  if (count > 0 && data == nullptr)
    fail_arg("Tensor::from_host", "data", cat("a pointer to ", count, " values"), "a null pointer");
  Tensor t = make("Tensor::from_vector", shape, dtype, device);
  copy_bytes(t.data(), device, data, Device::cpu(), t.nbytes());
  return t;
}

namespace detail {

Tensor wrap_memory(std::string_view op, void* data, const Shape& shape, DType dtype, Device device,
                   std::function<void(void*)> deleter) {
  const int64_t n = check::numel_of(op, shape, dtype);
  check::usable(op, device);
  const size_t element = dtype_size(dtype);
  const size_t bytes = static_cast<size_t>(n) * element;
  if (n > 0) {  // an empty tensor never touches its pointer (null or not)
    if (!data)
      fail_arg(op, "data", cat("a pointer to ", n, " elements of ", dtype_name(dtype), " for shape ", shape_str(shape)),
               "a null pointer");
    const auto address = reinterpret_cast<uintptr_t>(data);
    if (address % element != 0)
      fail_arg(op, "data", cat("an address that is a multiple of ", element, " (the size of ", dtype_name(dtype), ")"),
               cat("address ", data, ", ", address % element, " bytes past one"));
    uintptr_t end = 0;
    if (__builtin_add_overflow(address, bytes, &end))
      fail_arg(op, "shape", cat("a size that fits the address space after ", data),
               cat(shape_str(shape), " of ", dtype_name(dtype), ", ", bytes, " bytes"));
    detail::check_pointer(op, "data", data, device);
  }
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->dtype = dtype;
  impl->storage = std::make_shared<Storage>(data, bytes, device, std::move(deleter));
  return Tensor(std::move(impl));
}

}  // namespace detail

Tensor Tensor::from_blob(void* data, const Shape& shape, DType dtype, Device device,
                         std::function<void(void*)> deleter) {
  return detail::wrap_memory("Tensor::from_blob", data, shape, dtype, device, std::move(deleter));
}

const Shape& Tensor::shape() const {
  check::defined("Tensor::shape", "self", *this);
  return impl_->shape;
}

int64_t Tensor::size(int64_t d) const {
  check::defined("Tensor::size", "self", *this);
  const int64_t nd = dim();
  if (d < -nd || d >= nd) fail_arg("Tensor::size", "d", cat("a dimension in [", -nd, ", ", nd, ")"), cat(d));
  return impl_->shape[static_cast<size_t>(d < 0 ? d + nd : d)];
}

DType Tensor::dtype() const {
  check::defined("Tensor::dtype", "self", *this);
  return impl_->dtype;
}

Device Tensor::device() const {
  check::defined("Tensor::device", "self", *this);
  return impl_->storage->device;
}

std::string Tensor::str() const {
  if (!defined()) return "undefined tensor";
  return cat(dtype_name(dtype()), shape_str(shape()), " on ", device().str());
}

void* Tensor::data() const {
  check::defined("Tensor::data", "self", *this);
  if (!impl_->storage->data) return nullptr;
  return static_cast<char*>(impl_->storage->data) + impl_->offset * static_cast<int64_t>(dtype_size(impl_->dtype));
}

void Tensor::check_element_type(DType t) const {
  check::dtype_is("Tensor::data_ptr", "T", *this, t);
}

Tensor Tensor::to(Device device) const {
  check::defined("Tensor::to", "self", *this);
  if (device == this->device()) return *this;
  check::usable("Tensor::to", device);
  Tensor out = make("Tensor::to", shape(), dtype(), device);
  copy_bytes(out.data(), device, data(), this->device(), nbytes());
  if (autograd::needs_grad({*this})) {
    const Device from = this->device();
    autograd::record("to", {*this}, out, [from](const Tensor& g) { return std::vector<Tensor>{g.to(from)}; });
  }
  return out;
}

Tensor Tensor::to(DType dtype) const {
  check::defined("Tensor::to", "self", *this);
  if (dtype == this->dtype()) return *this;
  Tensor out = make("Tensor::to", shape(), dtype, device());
  if (device().is_cpu()) {
    cpu::convert(data(), this->dtype(), out.data(), dtype, numel());
  } else {
    detail::DeviceGuard g(device());
    kernels::convert(data(), this->dtype(), out.data(), dtype, numel(), detail::stream(device()));
  }
  if (autograd::needs_grad({*this}) && autograd::differentiable(dtype)) {
    const DType from = this->dtype();
    autograd::record("to", {*this}, out, [from](const Tensor& g) { return std::vector<Tensor>{g.to(from)}; });
  }
  return out;
}

Tensor Tensor::to(DType dtype, Device device) const {
  // Convert where the data is when it shrinks, on the destination when it grows.
  if (dtype_size(dtype) <= dtype_size(this->dtype())) return to(dtype).to(device);
  return to(device).to(dtype);
}

double Tensor::item() const {
  if (numel() != 1) fail_arg("Tensor::item", "self", "a tensor with exactly one element", str());
  return to_vector<double>()[0];
}

Tensor Tensor::reshape(const Shape& new_shape) const {
  check::defined("Tensor::reshape", "self", *this);
  Shape s = new_shape;
  int64_t known = 1, infer = -1;
  bool overflow = false;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      if (infer >= 0) fail_arg("Tensor::reshape", "shape", "at most one -1", shape_str(new_shape));
      infer = static_cast<int64_t>(i);
    } else if (s[i] < 0) {
      fail_arg("Tensor::reshape", "shape", "non-negative sizes or one -1", shape_str(new_shape));
    } else {
      overflow |= __builtin_mul_overflow(known, s[i], &known);
    }
  }
  // A product past 2^63 - 1 is no tensor's element count, unless a size of 0 makes it 0.
  if (overflow) {
    bool has_zero = false;
    for (int64_t d : s) has_zero |= d == 0;
    if (has_zero) known = 0;
    else fail_arg("Tensor::reshape", "shape", cat("a shape with ", numel(), " elements"), shape_str(new_shape));
  }
  if (infer >= 0) {
    if (known == 0 || numel() % known != 0)
      fail_arg("Tensor::reshape", "shape", cat("a shape with ", numel(), " elements"), shape_str(new_shape));
    s[static_cast<size_t>(infer)] = numel() / known;
  }
  if (shape_numel(s) != numel())
    fail_arg("Tensor::reshape", "shape", cat("a shape with ", numel(), " elements (from ", shape_str(shape()), ")"),
             shape_str(new_shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = impl_->storage;
  impl->shape = s;
  impl->dtype = impl_->dtype;
  impl->offset = impl_->offset;
  Tensor out(std::move(impl));
  if (autograd::needs_grad({*this})) {
    const Shape old = shape();
    autograd::record("reshape", {*this}, out, [old](const Tensor& g) { return std::vector<Tensor>{g.reshape(old)}; });
  }
  return out;
}

Tensor Tensor::narrow(int64_t d, int64_t start, int64_t length) const {
  constexpr const char* op = "Tensor::narrow";
  check::defined(op, "self", *this);
  if (dim() == 0) fail_arg(op, "self", "a tensor with at least 1 dimension", str());
  if (d != 0 && d != -dim())
    fail_arg(op, "dim", cat("0 or ", -dim(), " (a view along another dimension would not be contiguous)"), cat(d));
  const int64_t rows = shape()[0];
  if (start < -rows || start > rows) fail_arg(op, "start", cat("a start in [", -rows, ", ", rows, "]"), cat(start));
  if (start < 0) start += rows;
  if (length < 0 || length > rows - start)
    fail_arg(op, "length", cat("a length in [0, ", rows - start, "] (size ", rows, " from start ", start, ")"),
             cat(length));
  Shape s = shape();
  s[0] = 1;
  const int64_t row_numel = shape_numel(s);
  s[0] = length;
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = impl_->storage;
  impl->shape = s;
  impl->dtype = impl_->dtype;
  impl->offset = impl_->offset + start * row_numel;
  Tensor out(std::move(impl));
  if (autograd::needs_grad({*this})) {
    const Shape whole = shape();
    const DType type = dtype();
    const Device where = device();
    autograd::record("narrow", {*this}, out, [whole, type, where, start, length](const Tensor& g) {
      Tensor full = Tensor::zeros(whole, type, where);
      full.narrow(0, start, length).copy_(g);
      return std::vector<Tensor>{full};
    });
  }
  return out;
}

Tensor Tensor::t() const {
  check::dim_in("Tensor::t", "self", *this, 2, 2);
  const int64_t rows = shape()[0], cols = shape()[1];
  Tensor out = make("Tensor::t", {cols, rows}, dtype(), device());
  if (device().is_cpu()) {
    cpu::transpose2d(data(), out.data(), rows, cols, dtype_size(dtype()));
  } else {
    detail::DeviceGuard g(device());
    kernels::transpose2d(data(), out.data(), rows, cols, dtype_size(dtype()), detail::stream(device()));
  }
  if (autograd::needs_grad({*this}))
    autograd::record("t", {*this}, out, [](const Tensor& g) { return std::vector<Tensor>{g.t()}; });
  return out;
}

Tensor Tensor::clone() const {
  check::defined("Tensor::clone", "self", *this);
  Tensor out = make("Tensor::clone", shape(), dtype(), device());
  copy_bytes(out.data(), device(), data(), device(), nbytes());
  if (autograd::needs_grad({*this}))
    autograd::record("clone", {*this}, out, [](const Tensor& g) { return std::vector<Tensor>{g}; });
  return out;
}

void Tensor::copy_(const Tensor& src) {
  check::defined("Tensor::copy_", "self", *this);
  check::shape_is("Tensor::copy_", "src", src, shape());
  autograd::mark_inplace("Tensor::copy_", "self", *this);
  const Tensor converted = src.detach().to(dtype(), device());  // src itself when nothing changes
  copy_bytes(data(), device(), converted.data(), device(), nbytes());
}

void Tensor::fill_(double value) {
  check::defined("Tensor::fill_", "self", *this);
  autograd::mark_inplace("Tensor::fill_", "self", *this);
  if (device().is_cpu()) {
    cpu::fill(dtype(), data(), numel(), value);
  } else {
    detail::DeviceGuard g(device());
    kernels::fill(dtype(), data(), numel(), value, detail::stream(device()));
  }
}

Tensor& Tensor::requires_grad_(bool on) {
  check::defined("Tensor::requires_grad_", "self", *this);
  if (on && !autograd::differentiable(dtype()))
    fail_arg("Tensor::requires_grad_", "self", "a floating-point tensor (f32, f64, f16 or bf16)", str());
  if (!on && impl_->grad_fn)
    fail_arg("Tensor::requires_grad_", "self", "a leaf (use detach() to cut a computed tensor from the graph)",
             cat(str(), " computed by '", impl_->grad_fn->name, "'"));
  impl_->requires_grad = on;
  return *this;
}

bool Tensor::requires_grad() const { return impl_ && impl_->requires_grad; }

Tensor Tensor::grad() const {
  check::defined("Tensor::grad", "self", *this);
  return impl_->grad ? Tensor(impl_->grad) : Tensor();
}

void Tensor::set_grad(const Tensor& g) {
  check::defined("Tensor::set_grad", "self", *this);
  if (g.defined()) {  // an undefined g drops the gradient
    check::shape_is("Tensor::set_grad", "grad", g, shape());
    check::dtype_is("Tensor::set_grad", "grad", g, dtype());
    check::device_is("Tensor::set_grad", "grad", g, device());
  }
  impl_->grad = g.impl_ptr();
}

void Tensor::zero_grad() {
  check::defined("Tensor::zero_grad", "self", *this);
  impl_->grad.reset();
}

Tensor Tensor::detach() const {
  check::defined("Tensor::detach", "self", *this);
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = impl_->storage;
  impl->shape = impl_->shape;
  impl->dtype = impl_->dtype;
  impl->offset = impl_->offset;
  return Tensor(std::move(impl));
}

bool Tensor::is_leaf() const { return !impl_ || !impl_->grad_fn; }

}  // namespace octet
