// Dispatch and validation of the quant family (quant.hpp): code tables, Code (validated once,
// cached per device with the kernels' index tables), quantize/dequantize (global and
// blockwise, nested absmax) and fake-quantize. Each op checks its arguments here, allocates
// its outputs and runs src/cpu/quant.cpp or the CUDA launchers of kernels/quant.cuh on the
// tensors' device.
#include "octet/quant.hpp"

#include <cmath>
#include <cstring>
#include <mutex>

#include "kernels/quant.cuh"
#include "octet/autograd.hpp"
#include "src/amax_hint.hpp"
#include "src/check.hpp"
#include "src/cpu/quant.hpp"
#include "src/runtime_internal.hpp"

namespace octet {

Tensor create_dynamic_map(bool is_signed, int max_exponent_bits, int total_bits) {
  return Tensor::from_vector(cpu::dynamic_map(is_signed, max_exponent_bits, total_bits), Shape{256});
}

Tensor create_fp8_map(bool is_signed, int exponent_bits, int precision_bits, int total_bits) {
  return Tensor::from_vector(cpu::fp8_map(is_signed, exponent_bits, precision_bits, total_bits), Shape{256});
}

Tensor create_linear_map(bool is_signed, int total_bits) {
  return Tensor::from_vector(cpu::linear_map(is_signed, total_bits), Shape{256});
}

struct Code::Impl {
  std::string name;
  std::vector<float> values;
  quant_index::Tables tables;
  std::mutex mutex;  // guards everything below
  bool lut_built = false;
  cpu::IndexLut lut;
  std::vector<std::pair<Device, Tensor>> tables_on;  // f32 [256] per device
  std::vector<std::pair<Device, Tensor>> index_on;   // u8 image of Tables + LUT per CUDA device
};

namespace {

// A table uploaded inside a CUDA graph capture would be graph memory, gone for eager use.
constexpr const char* kFirstUploadInCapture =
    "uploads a table to the device on the code's first use there (warm up: run the work once eagerly before "
    "capturing)";

const Tensor* find(const std::vector<std::pair<Device, Tensor>>& cache, Device d) {
  for (const auto& [dev, t] : cache)
    if (dev == d) return &t;
  return nullptr;
}

}  // namespace

Code::Code() : Code(dynamic(true)) {}

Code::Code(const Tensor& table, std::string name) : impl_(std::make_shared<Impl>()) {
  const char* op = "Code";
  check::dtype_is(op, "table", table, DType::f32);
  check::shape_is(op, "table", table, Shape{256});
  std::vector<float> v = table.to_vector<float>();
  for (size_t i = 0; i < v.size(); ++i) {
    if (std::isnan(v[i])) fail_arg(op, "table", "256 float32 values without NaN", cat("NaN at index ", i));
    if (i > 0 && v[i - 1] > v[i])
      fail_arg(op, "table", "values sorted ascending",
               cat("table[", i - 1, "] = ", v[i - 1], " > table[", i, "] = ", v[i]));
  }
  impl_->name = std::move(name);
  impl_->tables = cpu::index_tables(v.data());
  impl_->values = std::move(v);
}

Code Code::dynamic(bool is_signed) {
  static const Code s(create_dynamic_map(true), "dynamic");
  static const Code u(create_dynamic_map(false), "dynamic_unsigned");
  return is_signed ? s : u;
}
Code Code::fp8_e4m3() {
  static const Code c(create_fp8_map(true, 4, 3, 8), "fp8_e4m3");
  return c;
}
Code Code::fp8_e5m2() {
  static const Code c(create_fp8_map(true, 5, 2, 8), "fp8_e5m2");
  return c;
}
Code Code::linear() {
  static const Code c(create_linear_map(true, 8), "linear");
  return c;
}

const std::string& Code::name() const { return impl_->name; }
const std::vector<float>& Code::values() const { return impl_->values; }

Tensor Code::table(Device device) const {
  check::usable("Code::table", device);
  std::lock_guard lock(impl_->mutex);
  if (const Tensor* t = find(impl_->tables_on, device)) return *t;
  detail::refuse_in_capture("Code", device, kFirstUploadInCapture);
  Tensor t = Tensor::from_vector(impl_->values, Shape{256}, device);
  // The cached copy is read from every thread's stream: wait once for the upload on this one.
  synchronize(device);
  impl_->tables_on.emplace_back(device, t);
  return t;
}

namespace detail {

struct CodeAccess {
  static const quant_index::Tables& tables(const Code& c) { return c.impl_->tables; }

  static const cpu::IndexLut& lut(const Code& c) {
    std::lock_guard lock(c.impl_->mutex);
    return lut_locked(*c.impl_);
  }

  // The index tables on a CUDA device (uploaded once).
  static kernels::QuantIndex device_index(const Code& c, Device device) {
    Code::Impl& im = *c.impl_;
    std::lock_guard lock(im.mutex);
    const cpu::IndexLut& lut = lut_locked(im);
    const size_t lut_end = sizeof(quant_index::Tables) + lut.entries.size() * sizeof(quant_index::LutEntry);
    const size_t bytes = lut_end + lut.compact_entries.size() * sizeof(uint32_t);
    const Tensor* t = find(im.index_on, device);
    if (!t) {
      detail::refuse_in_capture("Code", device, kFirstUploadInCapture);
      std::vector<uint8_t> image(bytes);
      std::memcpy(image.data(), &im.tables, sizeof im.tables);
      std::memcpy(image.data() + sizeof im.tables, lut.entries.data(), lut_end - sizeof im.tables);
      std::memcpy(image.data() + lut_end, lut.compact_entries.data(), bytes - lut_end);
      im.index_on.emplace_back(device, Tensor::from_vector(image, device));
      synchronize(device);  // read from every thread's stream: wait once for the upload on this one
      t = &im.index_on.back().second;
    }
    return {t->data(), static_cast<int32_t>(bytes), lut.shape, lut.compact, static_cast<int32_t>(lut_end)};
  }

 private:
  static const cpu::IndexLut& lut_locked(Code::Impl& im) {
    if (!im.lut_built) {
      im.lut = cpu::build_index_lut(im.tables);
      im.lut_built = true;
    }
    return im.lut;
  }
};

}  // namespace detail

namespace quant_internal {
const quant_index::Tables& tables(const Code& code) { return detail::CodeAccess::tables(code); }
kernels::QuantIndex device_index(const Code& code, Device device) {
  return detail::CodeAccess::device_index(code, device);
}
const cpu::IndexLut& index_lut(const Code& code) { return detail::CodeAccess::lut(code); }
uint64_t index_mismatches_on(const Code& code, Device device) {
  detail::DeviceGuard g(device);
  return kernels::index_mismatches(detail::CodeAccess::device_index(code, device), detail::stream(device));
}
}  // namespace quant_internal

namespace {

constexpr std::initializer_list<DType> kInputs = {DType::f32, DType::f16, DType::bf16};

void check_input(const char* op, const Tensor& A) {
  check::dtype_in(op, "A", A, kInputs);
  check::usable(op, A.device());
  autograd::refuse(op, {A});
}

void check_blocksize(const char* op, const char* arg, int64_t b) {
  if (b < 32 || b > 4096 || (b & (b - 1)) != 0) fail_arg(op, arg, "a power of two in [32, 4096]", cat(b));
}

int log2_of(int64_t b) {
  int l = 0;
  while ((int64_t{1} << l) < b) ++l;
  return l;
}

int64_t blocks_of(int64_t n, int64_t b) { return (n + b - 1) / b; }

// Validates A and blocksize (0: global), then computes codes, absmax (f32 [blocks] or [1])
// and, when fake is given, the dequantized values into it.
// fork (CUDA): the kernels run on the device's side stream (detail::fork_side_stream) after
// the outputs are allocated; the caller joins it before using or dropping the outputs.
void quantize_into(const char* op, const Tensor& A, const Code& code, int64_t blocksize, Tensor& codes, Tensor& absmax,
                   Tensor* fake, bool fork = false) {
  check_input(op, A);
  if (blocksize > 0) check_blocksize(op, "blocksize", blocksize);
  // Fake-quantize on CUDA writes no codes (one read + one write per element).
  if (!fake || A.device().is_cpu()) codes = Tensor::empty(A.shape(), DType::u8, A.device());
  absmax = Tensor::empty({blocksize > 0 ? blocks_of(A.numel(), blocksize) : 1}, DType::f32, A.device());
  if (fake) *fake = Tensor::empty(A.shape(), A.dtype(), A.device());
  const int64_t n = A.numel();
  void* f = fake ? fake->data() : nullptr;
  uint8_t* c = codes.defined() ? static_cast<uint8_t*>(codes.data()) : nullptr;
  float* am = static_cast<float*>(absmax.data());
  if (A.device().is_cpu()) {
    const quant_index::Tables& tab = detail::CodeAccess::tables(code);
    const cpu::IndexLut& lut = detail::CodeAccess::lut(code);
    if (blocksize > 0) {
      cpu::quantize_blockwise(A.dtype(), A.data(), n, tab, &lut, blocksize, am, c, f);
    } else {
      am[0] = cpu::absmax_global(A.dtype(), A.data(), n);
      cpu::quantize_global(A.dtype(), A.data(), n, tab, &lut, am[0], c, f);
    }
    return;
  }
  detail::DeviceGuard g(A.device());
  cudaStream_t s = fork ? detail::fork_side_stream(A.device()) : detail::stream(A.device());
  const kernels::QuantIndex q = detail::CodeAccess::device_index(code, A.device());
  if (blocksize > 0) {
    kernels::quantize_blockwise(A.dtype(), A.data(), n, q, blocksize, am, c, f, s);
  } else {
    int parts = 0;  // max |A| from an amax hint when one is current (no absmax pass)
    const uint32_t* hint = detail::amax_hint(A, &parts);
    kernels::quantize_global(A.dtype(), A.data(), n, q, am, c, f, hint, parts, s);
  }
}

Quantized quantize_impl(const char* op, const Tensor& A, const Code& code, int64_t blocksize) {
  Tensor codes, absmax;
  quantize_into(op, A, code, blocksize, codes, absmax, nullptr);
  const Device dev = A.device();
  QuantState st;
  st.absmax = absmax;
  st.code = code.table(dev);
  st.blocksize = blocksize;
  st.dtype = A.dtype();
  st.shape = A.shape();
  return {codes, st};
}

// Nested absmax (docs/quant.md, 'Nested absmax'): offset = mean(absmax); absmax - offset
// quantized blockwise with the dynamic table and the same blocksize.
void nest(QuantState& st) {
  const Device dev = st.absmax.device();
  const int64_t nb = st.absmax.numel();
  Tensor offset = Tensor::empty({}, DType::f32, dev);
  Tensor shifted = Tensor::empty({nb}, DType::f32, dev);
  const float* am = static_cast<const float*>(st.absmax.data());
  float* off = static_cast<float*>(offset.data());
  if (dev.is_cpu()) {
    *off = cpu::mean_tree(am, nb);
    cpu::sub_offset(am, nb, *off, static_cast<float*>(shifted.data()));
  } else {
    detail::DeviceGuard g(dev);
    kernels::mean_tree(am, nb, off, detail::stream(dev));
    kernels::sub_offset(am, nb, off, static_cast<float*>(shifted.data()), detail::stream(dev));
  }
  Quantized inner = quantize_impl("quantize_blockwise", shifted, Code(), st.blocksize);
  st.nested = true;
  st.offset = offset;
  st.absmax = inner.codes;
  st.state2 = std::make_shared<QuantState>(inner.state);
}

DType out_type(const char* op, const QuantState& st, std::optional<DType> out_dtype) {
  const DType t = out_dtype.value_or(st.dtype);
  for (DType d : kInputs)
    if (t == d) return t;
  fail_arg(op, out_dtype ? "out_dtype" : "state.dtype", cat("dtype ", check::dtypes_str(kInputs)),
           cat("dtype ", dtype_name(t)));
}

// Checks codes against st and writes code[q] * absmax (+ offset) into a new tensor of out_t.
Tensor dequantize_impl(const char* op, const Tensor& codes, const QuantState& st, DType out_t,
                       const Tensor* add_offset = nullptr) {
  check::dtype_is(op, "codes", codes, DType::u8);
  const Device dev = codes.device();
  check::usable(op, dev);
  if (codes.shape() != st.shape)
    fail_arg(op, "codes", cat("shape ", shape_str(st.shape), " (state.shape)"),
             cat("shape ", shape_str(codes.shape())));
  const bool blockwise = std::string_view(op) == "dequantize_blockwise";
  if (blockwise) {
    if (st.blocksize == 0)
      fail_arg(op, "state", "a blockwise state (blocksize in [32, 4096])", "a global state (blocksize 0)");
    check_blocksize(op, "state.blocksize", st.blocksize);
  } else if (st.blocksize != 0) {
    fail_arg(op, "state", "a global state (blocksize 0)", cat("a blockwise state (blocksize ", st.blocksize, ")"));
  }
  check::dtype_is(op, "state.code", st.code, DType::f32);
  check::shape_is(op, "state.code", st.code, Shape{256});
  check::device_is(op, "state.code", st.code, dev);
  const int64_t n = codes.numel(), nb = blockwise ? blocks_of(n, st.blocksize) : 1;
  check::dtype_is(op, "state.absmax", st.absmax, st.nested ? DType::u8 : DType::f32);
  check::device_is(op, "state.absmax", st.absmax, dev);
  if (st.absmax.numel() != nb || (blockwise && st.absmax.dim() != 1))
    fail_arg(
        op, "state.absmax",
        blockwise ? cat("shape (", nb, ",) = ceil(", n, " / blocksize ", st.blocksize, ")") : std::string("1 element"),
        cat("shape ", shape_str(st.absmax.shape())));
  Tensor absmax = st.absmax;
  if (st.nested) {
    if (!st.state2) fail_arg(op, "state.state2", "the inner state of a nested absmax", "none");
    check::dtype_is(op, "state.offset", st.offset, DType::f32);
    check::device_is(op, "state.offset", st.offset, dev);
    if (st.offset.numel() != 1) fail_arg(op, "state.offset", "1 element", cat("shape ", shape_str(st.offset.shape())));
    absmax = dequantize_impl("dequantize_blockwise", st.absmax, *st.state2, DType::f32, &st.offset);
  }
  Tensor out = Tensor::empty(st.shape, out_t, dev);
  const int log2b = blockwise ? log2_of(st.blocksize) : 63;
  const auto* c = static_cast<const uint8_t*>(codes.data());
  const auto* code = static_cast<const float*>(st.code.data());
  const auto* am = static_cast<const float*>(absmax.data());
  const auto* off = add_offset ? static_cast<const float*>(add_offset->data()) : nullptr;
  if (dev.is_cpu()) {
    cpu::dequantize(c, n, code, am, log2b, off, out_t, out.data());
  } else {
    detail::DeviceGuard g(dev);
    kernels::dequantize(c, n, code, am, log2b, off, out_t, out.data(), detail::stream(dev));
  }
  return out;
}

Tensor fake_impl(const char* op, const Tensor& A, const Code& code, int64_t blocksize) {
  Tensor codes, absmax, out;
  quantize_into(op, A, code, blocksize, codes, absmax, &out);
  return out;
}

}  // namespace

Quantized quantize(const Tensor& A, const Code& code) { return quantize_impl("quantize", A, code, 0); }

Tensor dequantize(const Tensor& codes, const QuantState& state, std::optional<DType> out_dtype) {
  return dequantize_impl("dequantize", codes, state, out_type("dequantize", state, out_dtype));
}

Quantized quantize_blockwise(const Tensor& A, const Code& code, int64_t blocksize, bool nested) {
  check_blocksize("quantize_blockwise", "blocksize", blocksize);
  Quantized q = quantize_impl("quantize_blockwise", A, code, blocksize);
  if (nested) nest(q.state);
  return q;
}

Tensor dequantize_blockwise(const Tensor& codes, const QuantState& state, std::optional<DType> out_dtype) {
  return dequantize_impl("dequantize_blockwise", codes, state, out_type("dequantize_blockwise", state, out_dtype));
}

Tensor fake_quantize_blockwise(const Tensor& A, const Code& code, int64_t blocksize) {
  check_blocksize("fake_quantize_blockwise", "blocksize", blocksize);
  return fake_impl("fake_quantize_blockwise", A, code, blocksize);
}

Tensor fake_quantize(const Tensor& A, const Code& code) { return fake_impl("fake_quantize", A, code, 0); }

Tensor quant_internal::fake_quantize_forked(const Tensor& A, const Code& code, int64_t blocksize, Tensor& absmax) {
  const char* op = blocksize > 0 ? "fake_quantize_blockwise" : "fake_quantize";
  Tensor codes, out;
  quantize_into(op, A, code, blocksize, codes, absmax, &out, A.device().is_cuda());
  return out;
}

void quant_internal::fake_quantize_pair(const Tensor& A, int64_t a_blocksize, const Tensor& B, const Code& code,
                                        Tensor& Aq, Tensor& Bq) {
  check_input("fake_quantize_blockwise", A);
  check_blocksize("fake_quantize_blockwise", "blocksize", a_blocksize);
  check_input("fake_quantize", B);
  if (!A.device().is_cuda() || B.device() != A.device() || B.dtype() != A.dtype()) {
    Aq = fake_quantize_blockwise(A, code, a_blocksize);
    Bq = fake_quantize(B, code);
    return;
  }
  detail::DeviceGuard g(A.device());
  cudaStream_t s = detail::stream(A.device());
  const kernels::QuantIndex q = detail::CodeAccess::device_index(code, A.device());
  Aq = Tensor::empty(A.shape(), A.dtype(), A.device());
  Bq = Tensor::empty(B.shape(), B.dtype(), B.device());
  const Tensor a_absmax = Tensor::empty({blocks_of(A.numel(), a_blocksize)}, DType::f32, A.device());
  const Tensor b_absmax = Tensor::empty({1}, DType::f32, A.device());
  const Tensor partial = Tensor::empty({kernels::side_absmax_capacity()}, DType::i32, A.device());
  kernels::SideAbsmax side{B.data(), B.numel(), static_cast<uint32_t*>(partial.data())};
  kernels::quantize_blockwise(A.dtype(), A.data(), A.numel(), q, a_blocksize, static_cast<float*>(a_absmax.data()),
                              nullptr, Aq.data(), s, &side);
  // parts == 0 (A or B empty): B's own absmax pass
  kernels::quantize_global(B.dtype(), B.data(), B.numel(), q, static_cast<float*>(b_absmax.data()), nullptr,
                           Bq.data(), side.parts > 0 ? side.partial : nullptr, side.parts, s);
}

void quant_internal::e4m3_operands(const Tensor& A, int64_t a_blocksize, const Tensor& B, bool b_transposed,
                                   const Code& code, bool block128, Tensor& A8, Tensor& a_scale, Tensor& B8,
                                   Tensor& b_scale, Tensor* Bq) {
  const Device dev = A.device();
  const int64_t k = A.size(-1), rows = A.numel() / k, n = b_transposed ? B.size(0) : B.size(1);
  detail::DeviceGuard g(dev);
  cudaStream_t s = detail::stream(dev);
  const kernels::QuantIndex q = detail::CodeAccess::device_index(code, dev);
  A8 = Tensor::empty({rows, k}, DType::f8_e4m3, dev);
  const Tensor a_absmax = Tensor::empty({blocks_of(A.numel(), a_blocksize)}, DType::f32, dev);
  B8 = Tensor::empty({n, k}, DType::f8_e4m3, dev);
  b_scale = Tensor::empty({block128 ? n / 128 * (k / 128) : n}, DType::f32, dev);
  const Tensor b_absmax = Tensor::empty({1}, DType::f32, dev);
  int parts = 0;
  const uint32_t* hint = detail::amax_hint(B, &parts);
  Tensor partial;
  kernels::SideAbsmax side;
  if (!hint) {
    partial = Tensor::empty({kernels::side_absmax_capacity()}, DType::i32, dev);
    side = {B.data(), B.numel(), static_cast<uint32_t*>(partial.data())};
  }
  kernels::quantize_blockwise_e4m3(A.dtype(), A.data(), A.numel(), q, a_blocksize,
                                   static_cast<float*>(a_absmax.data()), static_cast<uint8_t*>(A8.data()), s,
                                   hint ? nullptr : &side);
  if (block128) {
    a_scale = Tensor::empty({k / 128, rows}, DType::f32, dev);
    kernels::expand_block_scales(static_cast<const float*>(a_absmax.data()), rows, k, a_blocksize,
                                 static_cast<float*>(a_scale.data()), s);
  } else {
    a_scale = a_absmax;
  }
  if (!hint && side.parts > 0) hint = side.partial, parts = side.parts;
  const float square = kernels::kE4M3Mul * kernels::kE4M3Mul;
  kernels::quantize_global_e4m3(B.dtype(), B.data(), B.size(0), B.size(1), !b_transposed, q,
                                static_cast<float*>(b_absmax.data()), static_cast<uint8_t*>(B8.data()), hint, parts,
                                static_cast<float*>(b_scale.data()), b_scale.numel(), square, s);
  if (Bq) {
    *Bq = Tensor::empty(B.shape(), B.dtype(), dev);
    const Tensor absmax2 = Tensor::empty({1}, DType::f32, dev);
    kernels::quantize_global(B.dtype(), B.data(), B.numel(), q, static_cast<float*>(absmax2.data()), nullptr,
                             Bq->data(), hint, parts, s);
  }
}

}  // namespace octet
