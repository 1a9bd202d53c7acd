// The cuBLASLt side of the fp8_gemm family: plans (descriptors, layouts, the heuristic's choice)
// cached per (device, shape, dtypes, options, alignment) under a mutex, a plan's own mutex
// covering the setting of its pointers and the enqueue; the autotuner; the device capability query.
// Autotune (large problems, when switched on): the first call also runs each of the heuristic's
// candidates four times (a warm pass, then three timed rounds between CUDA events) before its own
// GEMM; a later call whose events have completed (cudaEventQuery, no host wait) keeps the fastest
// candidate for good (if it beats the heuristic's first choice by 3%).
// cuBLASLt takes FP8 with bias only for f16/bf16 D (f32 D wants a bf16 bias), so the dispatch
// (src/fp8_gemm.cpp) asks for the BIAS epilogue only there.
#include <atomic>
#include <functional>
#include <map>
#include <memory>

#include "src/cuda_check.hpp"
#include "src/fp8_gemm_internal.hpp"
#include "src/fp8_simulated_internal.hpp"
#include "src/runtime_internal.hpp"

namespace octet {
namespace fp8_gemm_internal {
namespace {

constexpr int kTuneCandidates = 8;
// Timed rounds per candidate: the smallest of them counts.
constexpr int kTuneRounds = 3;
std::atomic<bool> g_autotune{false};

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::f8_e4m3: return CUDA_R_8F_E4M3;
    case DType::f8_e5m2: return CUDA_R_8F_E5M2;
    case DType::f16: return CUDA_R_16F;
    case DType::bf16: return CUDA_R_16BF;
    default: return CUDA_R_32F;
  }
}

template <class T>
void set_desc(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr, const T& v) {
  OCTET_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d, attr, &v, sizeof v));
}

std::unique_ptr<Plan> make_plan(const PlanKey& key) {
  auto p = std::make_unique<Plan>();
  const Device dev = Device::cuda(key.device);
  OCTET_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  set_desc(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, CUBLAS_OP_T);
  set_desc(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, CUBLAS_OP_N);
  set_desc(p->desc, CUBLASLT_MATMUL_DESC_FAST_ACCUM, static_cast<int8_t>(key.fast ? 1 : 0));
  if (key.scales != 0) {
    // cuBLASLt's A is our b, its B our a.
    const bool outer = key.scales == 1 + static_cast<int>(detail::Fp8GemmScales::outer);
    const int32_t mode_a =
        outer ? CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F : CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
    const int32_t mode_b =
        outer ? CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F : CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
    set_desc(p->desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, mode_a);
    set_desc(p->desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, mode_b);
    // The heuristic finds no algorithm for vector scales whose pointers are null; run_plan sets
    // the real ones (any device address serves here).
    size_t bytes = 0;
    const void* somewhere = detail::cublaslt_workspace(dev, &bytes);
    set_desc(p->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, somewhere);
    set_desc(p->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, somewhere);
  }
  if (key.bias) {
    set_desc(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, CUBLASLT_EPILOGUE_BIAS);
    set_desc(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, static_cast<int32_t>(cuda_type(key.out)));
  }
  const auto k = static_cast<uint64_t>(key.k), m = static_cast<uint64_t>(key.m), n = static_cast<uint64_t>(key.n);
  OCTET_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->la, cuda_type(key.b), k, n, key.k));
  OCTET_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->lb, cuda_type(key.a), k, m, key.k));
  OCTET_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->ld, cuda_type(key.out), n, m, key.n));

  cublasLtMatmulPreference_t pref = nullptr;
  OCTET_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  size_t workspace = 0;
  detail::cublaslt_workspace(dev, &workspace);
  const uint64_t ws = workspace;
  const uint32_t out_align = 256;
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
  const uint32_t align_lt_a = key.align_b, align_lt_b = key.align_a;  // cuBLASLt's A is our b
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_lt_a, sizeof(uint32_t));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_lt_b, sizeof(uint32_t));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &out_align, sizeof out_align);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &out_align, sizeof out_align);
  cublasLtMatmulHeuristicResult_t results[kTuneCandidates] = {};
  int found = 0;
  const int asked = key.tune ? kTuneCandidates : 1;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(detail::cublaslt_handle(dev), p->desc, p->la, p->lb, p->ld,
                                                           p->ld, pref, asked, results, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  p->ok = st == CUBLAS_STATUS_SUCCESS && found > 0;
  if (!p->ok) return p;
  p->algo = results[0].algo;
  for (int i = 0; i < found; ++i)
    if (results[i].state == CUBLAS_STATUS_SUCCESS) p->candidates.push_back(results[i].algo);
  if (p->candidates.size() > 1) p->tune = Plan::Tune::pending;
  return p;
}

// Autotune bookkeeping under plan.mu: on the first call a warm pass, then kTuneRounds rounds that
// time every candidate between events; once the last event has completed, the candidate with the
// smallest per-candidate minimum wins if it beats the heuristic's first choice by 3% (timing noise
// must not move the choice). Never waits on the device.
void tune_plan(Plan& plan, const std::function<cublasStatus_t(const cublasLtMatmulAlgo_t&)>& matmul, cudaStream_t s) {
  const size_t n = plan.candidates.size();
  if (plan.tune == Plan::Tune::pending) {
    plan.runs.assign(n, false);
    for (size_t i = 0; i < n; ++i) plan.runs[i] = matmul(plan.candidates[i]) == CUBLAS_STATUS_SUCCESS;
    plan.events.assign(kTuneRounds * n + 1, nullptr);
    for (cudaEvent_t& e : plan.events) OCTET_CUDA_CHECK(cudaEventCreate(&e));
    OCTET_CUDA_CHECK(cudaEventRecord(plan.events[0], s));
    for (size_t r = 0; r < kTuneRounds; ++r) {
      for (size_t i = 0; i < n; ++i) {
        if (plan.runs[i]) plan.runs[i] = matmul(plan.candidates[i]) == CUBLAS_STATUS_SUCCESS;
        OCTET_CUDA_CHECK(cudaEventRecord(plan.events[r * n + i + 1], s));
      }
    }
    plan.tune = Plan::Tune::timing;
    return;
  }
  if (plan.tune != Plan::Tune::timing) return;
  const cudaError_t q = cudaEventQuery(plan.events.back());
  if (q == cudaErrorNotReady) {
    (void)cudaGetLastError();  // not an error: the timed rounds are still running
    return;
  }
  OCTET_CUDA_CHECK(q);
  std::vector<float> best(n, 0.0f);
  for (size_t r = 0; r < kTuneRounds; ++r)
    for (size_t i = 0; i < n; ++i) {
      float ms = 0.0f;
      OCTET_CUDA_CHECK(cudaEventElapsedTime(&ms, plan.events[r * n + i], plan.events[r * n + i + 1]));
      if (r == 0 || ms < best[i]) best[i] = ms;
    }
  size_t pick = 0;
  for (size_t i = 1; i < n; ++i)
    if (plan.runs[i] && (!plan.runs[pick] || best[i] < best[pick])) pick = i;
  if (plan.runs[pick] && (!plan.runs[0] || best[pick] < 0.97f * best[0])) plan.algo = plan.candidates[pick];
  for (cudaEvent_t e : plan.events) (void)cudaEventDestroy(e);
  plan.events.clear();
  plan.tune = Plan::Tune::done;
}

}  // namespace

uint32_t alignment(const void* p) {
  const auto v = reinterpret_cast<uintptr_t>(p);
  uint32_t a = 256;
  while (a > 1 && v % a != 0) a /= 2;
  return a;
}

bool autotune_on() { return g_autotune.load(); }

// Plans live for the process (like the handles in runtime.cpp).
Plan& plan_for(const PlanKey& key) {
  static std::mutex mu;
  static auto* cache = new std::map<PlanKey, std::unique_ptr<Plan>>();
  std::lock_guard lock(mu);
  std::unique_ptr<Plan>& slot = (*cache)[key];
  if (!slot) slot = make_plan(key);
  return *slot;
}

void run_plan(Plan& plan, Device dev, const void* a, const void* b, const Tensor& scale_a, const Tensor& scale_b,
              const void* bias, Tensor& out) {
  size_t ws_bytes = 0;
  void* ws = detail::cublaslt_workspace(dev, &ws_bytes);
  cublasLtHandle_t handle = detail::cublaslt_handle(dev);
  cudaStream_t s = detail::stream(dev);
  const float alpha = 1.0f, beta = 0.0f;
  std::lock_guard lock(plan.mu);
  set_desc(plan.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, scale_b.data());
  set_desc(plan.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, scale_a.data());
  if (bias) set_desc(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias);
  auto matmul = [&](const cublasLtMatmulAlgo_t& algo) {
    return cublasLtMatmul(handle, plan.desc, &alpha, b, plan.la, a, plan.lb, &beta, out.data(), plan.ld, out.data(),
                          plan.ld, &algo, ws, ws_bytes, s);
  };
  detail::sanitizer_preset(out.data(), out.nbytes(), dev);
  tune_plan(plan, matmul, s);
  OCTET_CUBLAS_CHECK(matmul(plan.algo));
}

int compute_capability(int index) {
  static std::mutex mu;
  static std::map<int, int> known;
  std::lock_guard lock(mu);
  auto it = known.find(index);
  if (it != known.end()) return it->second;
  int major = 0, minor = 0;
  OCTET_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, index));
  OCTET_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, index));
  return known[index] = major * 10 + minor;
}

}  // namespace fp8_gemm_internal

void set_fp8_gemm_autotune(bool on) { fp8_gemm_internal::g_autotune.store(on); }
bool fp8_gemm_autotune() { return fp8_gemm_internal::g_autotune.load(); }

bool fp8_tensor_cores(int device_index) {
  if (device_index < 0 || device_index >= cuda_device_count()) return false;
  return fp8_gemm_internal::compute_capability(device_index) >= 89;
}

}  // namespace octet
