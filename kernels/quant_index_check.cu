// Diagnostic for tests (kernels/quant.cuh index_mismatches): the quantize kernels' index lookup
// (kernels/quant_lookup.cuh) against quant_index::closed_form on every float bit pattern, on the
// device. The only quant launcher that waits for the host.
#include "kernels/quant_launch.cuh"

namespace octet::kernels {
namespace {
using namespace quant_detail;

// Checks the kernels' lookup (the compact table, or lut_index when it does not build) against
// closed_form on every float bit pattern in its domain: all of them for lut_index; for the compact
// table x <= hi and NaN with the clamp (every x the quantize kernels compute), and |x| <= 1 +
// 2^-23 without it (the x of finite blockwise tiles) when the table allows that.
__global__ void index_check_kernel(const qi::Tables* __restrict__ gtab, qi::LutShape shape, qi::Compact c,
                                   int32_t compact_offset, unsigned long long* bad) {
  extern __shared__ uint32_t smem[];
  const Lookup L = make_lookup(smem, false, gtab, c, shape);
  load_index(smem, false, gtab, c, compact_offset);
  __syncthreads();
  const bool compact = c.entries > 0;
  unsigned long long local = 0;
  const uint64_t stride = uint64_t(gridDim.x) * blockDim.x;
  for (uint64_t i = blockIdx.x * uint64_t(blockDim.x) + threadIdx.x; i < (uint64_t{1} << 32); i += stride) {
    const float x = __uint_as_float(static_cast<uint32_t>(i));
    const uint32_t want = static_cast<uint32_t>(qi::closed_form(gtab->code, gtab->mid, x));
    if (!compact) {
      local += (lookup<false>(L, x) & 0xFFu) != want;
      continue;
    }
    if (!(x > c.hi)) local += (lookup<true, true>(L, x) & 0xFFu) != want;
    if (c.noclamp && fabsf(x) <= qi::kMaxKernelX) local += (lookup<true, false>(L, x) & 0xFFu) != want;
  }
  atomicAdd(bad, local);
}

}  // namespace

uint64_t index_mismatches(const QuantIndex& q, cudaStream_t s) {
  unsigned long long* bad = nullptr;
  OCTET_CUDA_CHECK(cudaMallocAsync(&bad, sizeof *bad, s));
  OCTET_CUDA_CHECK(cudaMemsetAsync(bad, 0, sizeof *bad, s));
  int dev = 0, sms = 0;
  OCTET_CUDA_CHECK(cudaGetDevice(&dev));
  OCTET_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  const size_t smem = index_smem(index_check_kernel, q.compact, false);
  index_check_kernel<<<sms * 8, kThreads, smem, s>>>(static_cast<const qi::Tables*>(q.data), q.shape, q.compact,
                                                      q.compact_offset, bad);
  OCTET_LAUNCH_CHECK("index_check_kernel");
  unsigned long long host = 0;
  OCTET_CUDA_CHECK(cudaMemcpyAsync(&host, bad, sizeof host, cudaMemcpyDeviceToHost, s));
  OCTET_CUDA_CHECK(cudaFreeAsync(bad, s));
  OCTET_CUDA_CHECK(cudaStreamSynchronize(s));
  return host;
}

}  // namespace octet::kernels
