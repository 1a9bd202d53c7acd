// libFuzzer target for the DLPack importer (built and run by tools/fuzz-dlpack, not by meson).
// Each input describes a managed tensor as a foreign producer might hand it over: versioned or
// legacy, version, flags, device type and id, dtype code/bits/lanes, ndim, shape, strides (or
// none), byte offset. The importer may only refuse with octet::Error, and then must leave the
// deleter alone. What it accepts must describe exactly the producer's memory: the tensor's data
// is data + byte_offset, its shape and dtype are the given ones, every byte of it can be read
// (ASan checks the reads against a buffer of exactly the claimed size), an export of it and a
// re-import see the same memory, and the deleter runs exactly once when the last view goes.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "octet/dlpack.hpp"

namespace {

// Reads the input front to back; past its end everything reads as zero.
struct Bytes {
  const uint8_t* data;
  size_t size, at = 0;
  uint64_t take(int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; ++i) v |= uint64_t(at < size ? data[at++] : 0) << (8 * i);
    return v;
  }
};

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "dlpack import: %s\n", what);
  std::abort();
}

int g_deleted = 0;
template <class Managed> void count_deletion(Managed*) { ++g_deleted; }

// Interesting sizes: small ones, zero, negatives and huge ones.
int64_t size_from(uint64_t raw) {
  switch (raw % 8) {
    case 0: return 0;
    case 1: return 1;
    case 2: return -int64_t(raw >> 3 & 0xff) - 1;
    case 3: return int64_t(raw >> 3);  // up to 2^61: past any buffer
    default: return int64_t(raw >> 3 & 0x3f);
  }
}

template <class Managed>
void run(Bytes& in, Managed& managed) {
  DLTensor& dl = managed.dl_tensor;
  static const int32_t kDevices[] = {kDLCPU, kDLCPU, kDLCUDAHost, kDLCUDA, kDLCUDAManaged, kDLROCM, 0, 99};
  const uint64_t device = in.take(1);
  dl.device.device_type = static_cast<DLDeviceType>(kDevices[device % 8]);
  dl.device.device_id = (device >> 3) % 4 == 3 ? -1 : int32_t((device >> 3) % 4) * ((device >> 5) % 2);
  static const uint8_t kCodes[] = {kDLFloat, kDLFloat, kDLBfloat, kDLInt, kDLUInt, kDLFloat8_e4m3fn,
                                   kDLFloat8_e5m2, kDLComplex, kDLBool, kDLFloat8_e4m3, 3, 200};
  const uint64_t type = in.take(2);
  dl.dtype.code = kCodes[type % 12];
  static const uint8_t kBits[] = {8, 16, 32, 64, 1, 4, 0, 128};
  dl.dtype.bits = kBits[(type >> 4) % 8];
  dl.dtype.lanes = (type >> 7) % 8 == 0 ? uint16_t(2 + (type >> 10) % 3) : 1;
  const int8_t ndim = static_cast<int8_t>(in.take(1));
  dl.ndim = ndim % 10;
  std::vector<int64_t> shape(static_cast<size_t>(dl.ndim > 0 ? dl.ndim : 0)), strides(shape.size());
  for (auto& s : shape) s = size_from(in.take(2));
  const uint64_t stride_kind = in.take(1);
  int64_t compact = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = stride_kind % 4 == 2 ? size_from(in.take(2)) : compact;  // 2: arbitrary strides
    if (stride_kind % 4 == 3 && i + 1 < shape.size()) strides[i] |= 1;   // 3: padded rows
    const int64_t factor = shape[i] > 0 && shape[i] < (int64_t{1} << 20) ? shape[i] : 1;
    if (__builtin_mul_overflow(compact, factor, &compact)) compact = 1;
  }
  dl.shape = shape.empty() && in.take(1) % 2 ? nullptr : shape.data();
  dl.strides = stride_kind % 4 == 0 ? nullptr : strides.data();
  const uint64_t offset = in.take(1);
  dl.byte_offset = offset % 16 == 15 ? ~uint64_t{0} - 3 : offset % 64;

  // A buffer of exactly what the description claims for compact elements (when that is small);
  // otherwise a tiny one (the import may still succeed: octet cannot know the producer lied, so
  // then the data is not read).
  const size_t element = dl.dtype.bits >= 8 ? dl.dtype.bits / 8 * dl.dtype.lanes : 1;
  unsigned __int128 claimed = 1;
  for (int64_t s : shape) claimed *= s >= 0 ? static_cast<unsigned __int128>(s) : 0;
  claimed = claimed * element + (dl.byte_offset < 64 ? dl.byte_offset : 0);
  const bool real = claimed <= (1u << 20);
  std::vector<uint8_t> buffer(real ? static_cast<size_t>(claimed) : 8, 0x5a);
  dl.data = in.take(1) % 16 == 0 ? nullptr : buffer.data();
  managed.deleter = count_deletion<Managed>;

  g_deleted = 0;
  octet::Tensor t;
  try {
    t = octet::from_dlpack(&managed);
  } catch (const octet::Error&) {
    if (g_deleted != 0) finding("a refused import ran the deleter");
    return;
  }
  if (g_deleted != 0) finding("the deleter ran while the tensor lives");
  if (t.dim() != dl.ndim) finding("ndim changed");
  for (int i = 0; i < dl.ndim; ++i)
    if (t.shape()[static_cast<size_t>(i)] != shape[static_cast<size_t>(i)]) finding("shape changed");
  if (octet::dtype_size(t.dtype()) * 8 != dl.dtype.bits || dl.dtype.lanes != 1) finding("element type changed");
  if (t.numel() > 0 && !dl.data) finding("accepted null data for a non-empty tensor");
  if (t.numel() > 0 && reinterpret_cast<uintptr_t>(t.data()) != reinterpret_cast<uintptr_t>(dl.data) + dl.byte_offset)
    finding("data moved");
  if (real && t.device().is_cpu() && t.nbytes() > 0) {
    if (static_cast<unsigned __int128>(t.nbytes()) + dl.byte_offset > buffer.size()) finding("tensor exceeds the memory");
    std::vector<uint8_t> copy(t.nbytes());
    std::memcpy(copy.data(), t.data(), copy.size());  // ASan: inside the producer's buffer
    for (uint8_t b : copy)
      if (b != 0x5a) finding("read something else");
  }
  // Export and re-import: the same memory, one more owner; the deleter waits for both.
  {
    DLManagedTensorVersioned* exported = octet::to_dlpack(t);
    const octet::Tensor again = octet::from_dlpack(exported);
    if (again.numel() > 0 && again.data() != t.data()) finding("re-import moved the data");
    t = octet::Tensor();
    if (g_deleted != 0) finding("the deleter ran while a re-import lives");
  }
  if (g_deleted != 1) finding("the deleter did not run exactly once after the last view went");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Bytes in{data, size};
  const uint64_t form = in.take(1);
  if (form % 2 == 0) {
    DLManagedTensorVersioned managed{};
    managed.version.major = form % 8 == 6 ? 2 : 1;
    managed.version.minor = static_cast<uint32_t>(form >> 4);
    managed.flags = in.take(1) % 4;
    run(in, managed);
  } else {
    DLManagedTensor managed{};
    run(in, managed);
  }
  if (g_deleted > 1) finding("the deleter ran more than once");
  return 0;
}
