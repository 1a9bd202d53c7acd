// Uses the public API the way an embedding program does: a blockwise 8-bit round trip on the CPU,
// and on the first GPU when one is present. Exits non-zero if a round trip is off.
#include <cmath>
#include <cstdio>

#include "octet/octet.hpp"

static bool round_trip(octet::Device device) {
  using namespace octet;
  manual_seed(7);
  const Tensor x = randn({4097}, DType::f32, device);
  const Quantized q = quantize_blockwise(x, Code(), 256);
  const double err = max_abs(sub(dequantize_blockwise(q.codes, q.state), x)).item();
  std::printf("octet consumer on %s: 4097 values, blockwise 8-bit round trip, max |error| %.4f\n",
              device.str().c_str(), err);
  return std::isfinite(err) && err < 0.1;
}

int main() {
  bool ok = round_trip(octet::Device::cpu());
  if (octet::cuda_available()) ok = round_trip(octet::Device::cuda(0)) && ok;
  return ok ? 0 : 1;
}
