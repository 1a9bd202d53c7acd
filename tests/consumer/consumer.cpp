// Uses the public API the way an embedding program does, on the CPU and, when one is present, on
// the first GPU: a blockwise 8-bit round trip of octet's own tensor; then buffers the program owns
// (aligned host memory, cudaMalloc on the GPU) wrapped with Tensor::from_blob and quantized,
// dequantized back into the same buffer and clipped there, without copies; and a DLPack export
// and import of the buffer with the program's deleter counted. Exits non-zero if anything is off.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "octet/octet.hpp"

namespace {

bool report(bool ok, const char* what, octet::Device device) {
  std::printf("octet consumer on %s: %s: %s\n", device.str().c_str(), what, ok ? "ok" : "FAILED");
  return ok;
}

bool round_trip(octet::Device device) {
  using namespace octet;
  manual_seed(7);
  const Tensor x = randn({4097}, DType::f32, device);
  const Quantized q = quantize_blockwise(x, Code(), 256);
  const double err = max_abs(sub(dequantize_blockwise(q.codes, q.state), x)).item();
  std::printf("octet consumer on %s: 4097 values, blockwise 8-bit round trip, max |error| %.4f\n",
              device.str().c_str(), err);
  return std::isfinite(err) && err < 0.1;
}

// A gradient buffer the program allocated and frees itself.
struct Buffer {
  octet::Device device;
  float* data = nullptr;
  int64_t count = 0;
  Buffer(octet::Device d, int64_t n) : device(d), count(n) {
    const size_t bytes = static_cast<size_t>(n) * sizeof(float);
    if (d.is_cpu()) data = static_cast<float*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64));
    else if (cudaMalloc(reinterpret_cast<void**>(&data), bytes) != cudaSuccess) data = nullptr;
  }
  ~Buffer() {
    if (device.is_cpu()) std::free(data);
    else cudaFree(data);
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  std::vector<float> read() const {  // what the program sees in its buffer (after octet's work)
    std::vector<float> out(static_cast<size_t>(count));
    octet::synchronize(device);
    if (device.is_cpu()) std::copy(data, data + count, out.begin());
    else cudaMemcpy(out.data(), data, out.size() * sizeof(float), cudaMemcpyDeviceToHost);
    return out;
  }
};

bool owned_buffers(octet::Device device) {
  using namespace octet;
  const int64_t n = 10000;
  Buffer grad(device, n);
  if (!grad.data) return report(false, "allocating the program's buffer", device);
  // The program's gradient, written by "its own code" (here: octet's generator through the view).
  Tensor view = Tensor::from_blob(grad.data, {n}, DType::f32, device);
  manual_seed(3);
  view.copy_(scale(randn({n}, DType::f32, device), 100.0));
  const std::vector<float> before = grad.read();

  // Quantize the buffer where it lies, dequantize into it again.
  const Quantized q = quantize_blockwise(view, Code(), 256);
  view.copy_(dequantize_blockwise(q.codes, q.state));
  const std::vector<float> round = grad.read();
  double worst = 0, largest = 0;
  for (int64_t i = 0; i < n; ++i) {
    worst = std::max(worst, std::fabs(double(round[size_t(i)]) - double(before[size_t(i)])));
    largest = std::max(largest, std::fabs(double(before[size_t(i)])));
  }
  bool ok = report(view.data() == grad.data && worst <= 0.02 * largest, "quantize/dequantize in the program's buffer",
                   device);

  // Percentile clipping: a history of small norms, then this (large) gradient is scaled in place.
  ClipState clip = ClipState::create(device);
  Tensor small = Tensor::full({n}, 0.01, DType::f32, device);
  for (int step = 0; step < 10; ++step) (void)percentile_clipping(small, clip);
  const ClipResult& result = percentile_clipping(view, clip);
  scale_by_(view, result.scale);
  const double factor = result.scale.item();
  const std::vector<float> clipped = grad.read();
  bool scaled = factor > 0 && factor < 1;
  for (int64_t i = 0; i < n; ++i) scaled = scaled && clipped[size_t(i)] == float(round[size_t(i)] * float(factor));
  ok = report(scaled, "percentile clipping scaled the program's buffer in place", device) && ok;

  // DLPack: octet exports its view of the buffer, a consumer (here octet again) imports it; the
  // program's deleter runs once, when the last octet reference goes.
  int deleted = 0;
  {
    Tensor wrapped = Tensor::from_blob(grad.data, {n / 100, 100}, DType::f32, device, [&deleted](void*) { ++deleted; });
    DLManagedTensorVersioned* exported = to_dlpack(wrapped);
    wrapped = Tensor();
    Tensor imported = from_dlpack(exported);
    ok = report(imported.data() == grad.data && deleted == 0, "DLPack round trip keeps the buffer", device) && ok;
  }
  ok = report(deleted == 1, "the program's deleter ran exactly once", device) && ok;
  return ok;
}

}  // namespace

int main() {
  bool ok = round_trip(octet::Device::cpu());
  ok = owned_buffers(octet::Device::cpu()) && ok;
  if (octet::cuda_available()) {
    ok = round_trip(octet::Device::cuda(0)) && ok;
    ok = owned_buffers(octet::Device::cuda(0)) && ok;
  }
  return ok ? 0 : 1;
}
