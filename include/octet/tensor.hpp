// Tensor: a handle with shared ownership of contiguous row-major storage.
// Copying a Tensor shares the storage and the autograd state (like other tensor libraries);
// reshape and narrow are views (they share the storage and its version counter); t() and clone()
// copy. Sizes and indices are 64-bit.
// Storage is either octet's own (allocated and freed by octet) or memory the caller owns, wrapped
// without a copy by from_blob (or from_dlpack, dlpack.hpp): octet never frees wrapped memory, it
// runs the caller's deleter once when the last reference goes (docs/embedding.md).
// Host reads (item, to_vector, to(cpu)) wait for the device; nothing else synchronizes.
#pragma once
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "octet/device.hpp"
#include "octet/dtype.hpp"
#include "octet/error.hpp"

namespace octet {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "(2, 3)"
int64_t shape_numel(const Shape& s);    // 0 if any size is 0; throws past 2^63 - 1

// Raw bytes on one device. octet's own CUDA storage comes from cudaMallocAsync on the current
// stream and is returned with cudaFreeAsync on the then current stream (no device
// synchronization). Wrapped storage (`external`) is never freed by octet: its deleter, when there
// is one, runs exactly once, in the destructor, with the pointer it was given.
struct Storage {
  void* data = nullptr;
  size_t bytes = 0;
  Device device;
  uint64_t version = 0;  // counts in-place writes (autograd::mark_inplace, SavedTensor)
  bool external = false;   // memory octet did not allocate (from_blob, from_dlpack)
  bool read_only = false;  // imported read-only: in-place writes are refused (autograd::mark_inplace)
  std::function<void(void*)> deleter;  // external only; may be empty (the caller keeps the memory alive)
  // amax hint (src/amax_hint.hpp): per-block maxima of |x| over all `amax_numel` elements of
  // `amax_dtype`, written on the device by the CUDA elementwise op that produced version
  // `amax_version` of the contents; fp8_amax reads them instead of the data.
  std::shared_ptr<Storage> amax_partials;
  int amax_blocks = 0;
  uint64_t amax_version = 0;
  int64_t amax_numel = 0;
  DType amax_dtype = DType::f32;
  Storage(size_t bytes, Device device);  // octet's own memory
  // Wraps `bytes` at `external_data` on `device` (unchecked: Tensor::from_blob checks).
  Storage(void* external_data, size_t bytes, Device device, std::function<void(void*)> deleter);
  ~Storage();  // the deleter must not throw: it runs in a destructor
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
};

namespace autograd { struct Node; }
class Tensor;

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  DType dtype = DType::f32;
  int64_t offset = 0;  // in elements
  // autograd state (see autograd.hpp)
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;
  std::shared_ptr<autograd::Node> grad_fn;  // the node that produced this tensor, if recorded
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  static Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor ones(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dtype = DType::f32,
                     Device device = Device::cpu());
  // A tensor of T's dtype holding values (values.size() must equal the shape's element count).
  template <class T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape,
                            Device device = Device::cpu()) {
    return from_host(values.data(), values.size(), dtype_of_v<T>, shape, device);
  }
  // Shape {n} overload.
  template <class T>
  static Tensor from_vector(const std::vector<T>& values, Device device = Device::cpu()) {
    return from_vector(values, Shape{static_cast<int64_t>(values.size())}, device);
  }
  // count values of dtype at data (host memory; null only when count is 0).
  static Tensor from_host(const void* data, size_t count, DType dtype, const Shape& shape, Device device);
  // Wraps memory the caller owns, without a copy: shape's elements of dtype, compact row-major,
  // at `data` on `device`. Ops read it and in-place ops (copy_, fill_, axpy_, scale_by_, ...)
  // write it where it lies. `deleter` (optional) runs exactly once, with `data`, when the last
  // octet reference goes (views and DLPack exports included); without one the caller keeps the
  // memory alive for as long as octet may use it. On the CPU ops have finished when they return;
  // on CUDA work may still be queued on current_stream(device) when the deleter runs, so a
  // deleter frees after that work (cudaFree waits for the device; memory from cudaMallocAsync may
  // go back with cudaFreeAsync on that stream; an event recorded there tells a pool when).
  // Checks, each an octet::Error: data null while the shape has elements; the byte size past
  // 2^63 - 1 or past the end of the address space; data not a multiple of the dtype's size; on a
  // machine with a GPU, what CUDA says data is (cudaPointerGetAttributes) not matching `device`:
  // Device::cpu() takes plain, pinned or registered host memory and managed memory, cuda:N takes
  // device memory of cuda:N and managed memory. A CUDA device that does not exist here is an
  // error. When a check fails the deleter does not run: the memory stays the caller's.
  static Tensor from_blob(void* data, const Shape& shape, DType dtype, Device device,
                          std::function<void(void*)> deleter = nullptr);

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  int64_t dim() const { return static_cast<int64_t>(shape().size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const { return shape_numel(shape()); }
  DType dtype() const;
  Device device() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype()); }
  std::string str() const;  // "f32(2, 3) on cuda:0"

  void* data() const;  // start of this tensor's elements (device pointer on CUDA)
  template <class T> T* data_ptr() const {
    check_element_type(dtype_of_v<T>);
    return static_cast<T*>(data());
  }

  Tensor to(Device device) const;   // copy (shares nothing) unless already there
  Tensor to(DType dtype) const;     // converted copy (round to nearest even; fp8 saturates)
  Tensor to(DType dtype, Device device) const;
  // Values as T: a raw copy when T is the dtype, otherwise converted first. Waits for the device.
  template <class T> std::vector<T> to_vector() const {
    Tensor host = dtype() == dtype_of_v<T> ? to(Device::cpu()) : to(dtype_of_v<T>, Device::cpu());
    std::vector<T> out(static_cast<size_t>(host.numel()));
    if (!out.empty()) std::memcpy(out.data(), host.data(), out.size() * sizeof(T));
    return out;
  }
  double item() const;  // the single element as double; waits for the device
  Tensor reshape(const Shape& shape) const;  // a view (shares storage); one dimension may be -1
  // A view of `length` slices starting at slice `start` along dimension 0 (dim may be given as
  // -dim()): the result shares storage and its version counter, so an in-place write through it
  // is seen by autograd's saved tensors of the whole. Other dimensions would not be contiguous.
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor t() const;                          // transpose of a 2-D tensor (materialized copy)
  Tensor clone() const;
  void copy_(const Tensor& src);             // copy values from src (same shape, any dtype/device)
  void fill_(double value);
  void zero_() { fill_(0.0); }

  // autograd (autograd.hpp)
  Tensor& requires_grad_(bool on = true);
  bool requires_grad() const;
  Tensor grad() const;      // undefined until a backward reaches this leaf
  void set_grad(const Tensor& g);  // same shape, dtype and device as this; undefined g drops it
  void zero_grad();         // drops the gradient
  Tensor detach() const;    // shares storage, no autograd state
  bool is_leaf() const;

  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same(const Tensor& o) const { return impl_ == o.impl_; }

 private:
  void check_element_type(DType t) const;
  std::shared_ptr<TensorImpl> impl_;
};

}  // namespace octet
