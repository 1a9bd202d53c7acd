// rand/randn on cuRAND Philox4_32_10: the device generator on CUDA, the host generator on the CPU.
// One global (seed, offset) stream: each call starts at the current offset and advances it by
// the number of values it drew (rounded up to even), so both devices draw the same sequence.
#include "octet/random.hpp"

#include <cstring>
#include <mutex>
#include <vector>

#include "src/check.hpp"
#include "src/cuda_check.hpp"
#include "src/runtime_internal.hpp"

namespace octet {
namespace {

std::mutex g_mutex;
uint64_t g_seed = 0;
uint64_t g_offset = 0;
curandGenerator_t g_host = nullptr;
// Where the host generator stands after its last call: re-seeding costs ~7 ms on the host, so a call
// that continues exactly there (same seed, same kind of draw) skips it. Checked: for each kind,
// continuing equals re-seeding at offset + count.
struct HostPosition { uint64_t seed = 0, offset = 0; int kind = -1; } g_host_pos;
curandGenerator_t g_device[64] = {};

curandGenerator_t generator(Device device) {
  curandGenerator_t* slot = device.is_cpu() ? &g_host : &g_device[device.index];
  if (!*slot) {
    if (device.is_cpu()) OCTET_CURAND_CHECK(curandCreateGeneratorHost(slot, CURAND_RNG_PSEUDO_PHILOX4_32_10));
    else OCTET_CURAND_CHECK(curandCreateGenerator(slot, CURAND_RNG_PSEUDO_PHILOX4_32_10));
  }
  return *slot;
}

Tensor generate(const char* op, const Shape& shape, DType dtype, Device device, bool normal) {
  check::usable(op, device);
  if (dtype != DType::f32 && dtype != DType::f64 && dtype != DType::f16 && dtype != DType::bf16)
    fail_arg(op, "dtype", "f32, f64, f16 or bf16", dtype_name(dtype));
  const DType gen_t = dtype == DType::f64 ? DType::f64 : DType::f32;
  const int64_t n = check::numel_of(op, shape, gen_t);  // the f32/f64 draws of an f16/bf16 tensor fit too
  const int64_t drawn = (n + 1) / 2 * 2;  // normal generation needs an even count
  Tensor buf = Tensor::empty({drawn}, gen_t, device);
  if (n > 0) {
    detail::DeviceGuard guard(device);
    std::lock_guard lock(g_mutex);
    curandGenerator_t g = generator(device);
    if (device.is_cuda()) OCTET_CURAND_CHECK(curandSetStream(g, detail::stream(device)));
    const int kind = (gen_t == DType::f32 ? 0 : 2) + (normal ? 1 : 0);
    const bool continues = device.is_cpu() && g_host_pos.kind == kind && g_host_pos.seed == g_seed &&
                           g_host_pos.offset == g_offset;
    if (!continues) {
      OCTET_CURAND_CHECK(curandSetPseudoRandomGeneratorSeed(g, g_seed));
      OCTET_CURAND_CHECK(curandSetGeneratorOffset(g, g_offset));
    }
    g_host_pos.kind = -1;  // unknown until the draw succeeds
    const size_t count = static_cast<size_t>(drawn);
    if (gen_t == DType::f32) {
      float* p = static_cast<float*>(buf.data());
      if (normal) OCTET_CURAND_CHECK(curandGenerateNormal(g, p, count, 0.0f, 1.0f));
      else OCTET_CURAND_CHECK(curandGenerateUniform(g, p, count));
    } else {
      double* p = static_cast<double*>(buf.data());
      if (normal) OCTET_CURAND_CHECK(curandGenerateNormalDouble(g, p, count, 0.0, 1.0));
      else OCTET_CURAND_CHECK(curandGenerateUniformDouble(g, p, count));
    }
    g_offset += static_cast<uint64_t>(drawn);
    if (device.is_cpu()) g_host_pos = {g_seed, g_offset, kind};
  }
  Tensor out = buf;
  if (drawn != n) {
    // Drop the extra value: copy the first n into a tensor of the right size.
    Tensor trimmed = Tensor::empty({n}, gen_t, device);
    if (device.is_cpu()) std::memcpy(trimmed.data(), buf.data(), trimmed.nbytes());
    else OCTET_CUDA_CHECK(cudaMemcpyAsync(trimmed.data(), buf.data(), trimmed.nbytes(), cudaMemcpyDeviceToDevice, detail::stream(device)));
    out = trimmed;
  }
  out = out.reshape(shape);
  return out.to(dtype);
}

}  // namespace

void manual_seed(uint64_t seed) {
  std::lock_guard lock(g_mutex);
  g_seed = seed;
  g_offset = 0;
}

RngState rng_state() {
  std::lock_guard lock(g_mutex);
  return {g_seed, g_offset};
}

void set_rng_state(const RngState& state) {
  std::lock_guard lock(g_mutex);
  g_seed = state.seed;
  g_offset = state.offset;
}

Tensor rand(const Shape& shape, DType dtype, Device device) { return generate("rand", shape, dtype, device, false); }

Tensor randn(const Shape& shape, DType dtype, Device device) { return generate("randn", shape, dtype, device, true); }

}  // namespace octet
