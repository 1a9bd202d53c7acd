// Dispatch and validation of the fp8_gemm family (fp8_gemm.hpp), and the cuBLASLt FP8 GEMM.
// Layout mapping: cuBLASLt is column-major and FP8 needs "TN" (A transposed, B not). A row-major
// (r, c) buffer is a column-major (c, r) matrix, so with our a (M, K) and b (N, K) both K-major:
//   cuBLASLt A = b as K x N (ld K), op T;  B = a as K x M (ld K), op N;  D = out as N x M (ld N),
// i.e. D^T = out (M, N) row-major = a b^T. A_SCALE is b's dequant factor, B_SCALE is a's; the BIAS
// epilogue adds bias[N] along D's rows (out's columns). cuBLASLt takes FP8 with bias only for
// f16/bf16 D (f32 D wants a bf16 bias), so f32 outputs get their bias from add_bias afterwards.
// Plans (descriptors, layouts, heuristic choice) are cached per (device, shape, dtypes, options,
// alignment) under a mutex; a plan's own mutex covers setting its pointers and the enqueue.
// Autotune (large problems, when switched on): the first call also runs each of the heuristic's
// candidates four times (a warm pass, then three timed rounds between CUDA events) before its own
// GEMM; a later call whose events have completed (cudaEventQuery, no host wait) keeps the fastest
// candidate for good (if it beats the heuristic's first choice by 3%).
#include "octet/fp8_gemm.hpp"

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "kernels/fp8_gemm.cuh"
#include "src/amax_hint.hpp"
#include "octet/autograd.hpp"
#include "octet/convert.hpp"
#include "octet/ops.hpp"
#include "src/check.hpp"
#include "src/cpu/fp8_gemm.hpp"
#include "src/cuda_check.hpp"
#include "src/fp8_simulated_internal.hpp"
#include "src/runtime_internal.hpp"

namespace octet {
namespace {

constexpr std::initializer_list<DType> kFp8 = {DType::f8_e4m3, DType::f8_e5m2};
constexpr std::initializer_list<DType> kHigh = {DType::f32, DType::f16, DType::bf16};

bool is_fp8(DType t) { return t == DType::f8_e4m3 || t == DType::f8_e5m2; }

void check_fp8_dtype(const char* op, const char* arg, DType t) {
  if (!is_fp8(t)) fail_arg(op, arg, check::dtypes_str(kFp8), dtype_name(t));
}

// A one-element f32 tensor on `device` (scales, amax slots).
void check_scalar(const char* op, const char* arg, const Tensor& t, Device device) {
  check::defined(op, arg, t);
  check::dtype_is(op, arg, t, DType::f32);
  check::device_is(op, arg, t, device);
  if (t.numel() != 1) fail_arg(op, arg, "a one-element f32 tensor", cat("shape ", shape_str(t.shape())));
}

float host_scalar(const Tensor& t) { return *static_cast<const float*>(t.data()); }

Fp8Scale new_scale(Device device) {
  return {Tensor::empty({}, DType::f32, device), Tensor::empty({}, DType::f32, device)};
}

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::f8_e4m3: return CUDA_R_8F_E4M3;
    case DType::f8_e5m2: return CUDA_R_8F_E5M2;
    case DType::f16: return CUDA_R_16F;
    case DType::bf16: return CUDA_R_16BF;
    default: return CUDA_R_32F;
  }
}

uint32_t alignment(const void* p) {
  const auto v = reinterpret_cast<uintptr_t>(p);
  uint32_t a = 256;
  while (a > 1 && v % a != 0) a /= 2;
  return a;
}

int64_t round16(int64_t v) { return (v + 15) / 16 * 16; }

// Rows of t viewed as (rows, last dim): the product of the leading dims (1 for a 0-dim t).
int64_t rows_of(const Tensor& t) {
  return t.dim() == 0 ? 1 : shape_numel(Shape(t.shape().begin(), t.shape().end() - 1));
}

struct PlanKey {
  int device;
  int64_t m, n, k;
  DType a, b, out;
  bool bias, fast, tune;
  uint32_t align_a, align_b;
  int scales = 0;  // 0: scalars; 1 + detail::Fp8GemmScales: vector or block scales
  auto operator<=>(const PlanKey&) const = default;
};

constexpr int kTuneCandidates = 8;
constexpr int64_t kTuneMinMacs = int64_t{1} << 30;
std::atomic<bool> g_autotune{false};

struct Plan {
  std::mutex mu;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, ld = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool ok = false;
  enum class Tune { off, pending, timing, done } tune = Tune::off;
  std::vector<cublasLtMatmulAlgo_t> candidates;  // the heuristic's answers, best first
  std::vector<bool> runs;                        // candidate i ran without error
  std::vector<cudaEvent_t> events;               // candidates.size() + 1 marks of the timed pass
};

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
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(detail::cublaslt_handle(dev), p->desc, p->la, p->lb, p->ld,
                                                           p->ld, pref, key.tune ? kTuneCandidates : 1, results, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  p->ok = st == CUBLAS_STATUS_SUCCESS && found > 0;
  if (!p->ok) return p;
  p->algo = results[0].algo;
  for (int i = 0; i < found; ++i)
    if (results[i].state == CUBLAS_STATUS_SUCCESS) p->candidates.push_back(results[i].algo);
  if (p->candidates.size() > 1) p->tune = Plan::Tune::pending;
  return p;
}

// Plans live for the process (like the handles in runtime.cpp).
Plan& plan_for(const PlanKey& key) {
  static std::mutex mu;
  static auto* cache = new std::map<PlanKey, std::unique_ptr<Plan>>();
  std::lock_guard lock(mu);
  std::unique_ptr<Plan>& slot = (*cache)[key];
  if (!slot) slot = make_plan(key);
  return *slot;
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

struct Problem {
  int64_t m, n, k;
  bool epilogue_bias;  // bias goes through cuBLASLt (f16/bf16 out)
  Fp8GemmPath path;
  Plan* plan = nullptr;
};

Problem route(const Tensor& a, const Tensor& b, DType out_dtype, const Tensor& bias, bool fast_accum) {
  Problem p{};
  p.k = a.size(-1);
  p.n = b.size(0);
  p.m = rows_of(a);
  p.epilogue_bias = bias.defined() && out_dtype != DType::f32;
  const Device dev = a.device();
  if (dev.is_cpu()) {
    p.path = Fp8GemmPath::cpu_emulation;
    return p;
  }
  p.path = Fp8GemmPath::dequantize_fallback;
  const bool both_e5m2 = a.dtype() == DType::f8_e5m2 && b.dtype() == DType::f8_e5m2;
  if (p.k == 0 || p.m == 0 || p.n == 0 || both_e5m2 || !fp8_tensor_cores(dev.index)) return p;
  const uint32_t align_a = alignment(a.data()), align_b = alignment(b.data());
  const bool direct = p.m % 16 == 0 && p.n % 16 == 0 && p.k % 16 == 0 && align_a >= 16 && align_b >= 16 &&
                      (!p.epilogue_bias || alignment(bias.data()) >= 16);
  const bool tune = g_autotune.load() && p.m * p.n * p.k >= kTuneMinMacs;
  PlanKey key{dev.index, p.m, p.n, p.k, a.dtype(), b.dtype(), out_dtype, p.epilogue_bias, fast_accum, tune, 256, 256};
  if (direct) {
    key.align_a = align_a;
    key.align_b = align_b;
  } else {
    key.m = round16(p.m);
    key.n = round16(p.n);
    key.k = round16(p.k);
  }
  Plan& plan = plan_for(key);
  if (!plan.ok) return p;
  p.plan = &plan;
  p.path = direct ? Fp8GemmPath::cublaslt : Fp8GemmPath::cublaslt_padded;
  return p;
}

// Autotune bookkeeping under plan.mu: on the first call a warm pass, then kTuneRounds rounds that
// time every candidate between events; once the last event has completed, the candidate with the
// smallest per-candidate minimum wins if it beats the heuristic's first choice by 3% (timing noise
// must not move the choice). Never waits on the device.
constexpr int kTuneRounds = 3;

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

// A copy of t (rows, cols) zero-padded to (rows_p, cols_p) (or cropped), on t's device.
Tensor padded(const Tensor& t, int64_t rows, int64_t cols, int64_t rows_p, int64_t cols_p) {
  Tensor out = Tensor::empty({rows_p, cols_p}, t.dtype(), t.device());
  kernels::copy2d(t.data(), rows, cols, out.data(), rows_p, cols_p, dtype_size(t.dtype()), detail::stream(t.device()));
  return out;
}

// Dequantize both operands and run the f32 GEMM of ops.hpp (TF32 off).
Tensor fallback(const Tensor& a2, const Tensor& b, const Tensor& scale_a, const Tensor& scale_b, DType out_dtype,
                const Tensor& bias) {
  Tensor out = matmul(dequantize_fp8(a2, scale_a), dequantize_fp8(b, scale_b).t());
  if (bias.defined()) out = add_bias(out, bias.to(DType::f32));
  return out.to(out_dtype);
}

}  // namespace

float fp8_max(DType fp8) {
  check_fp8_dtype("fp8_max", "fp8", fp8);
  return fp8 == DType::f8_e4m3 ? kE4M3Max : kE5M2Max;
}

void set_fp8_gemm_autotune(bool on) { g_autotune.store(on); }
bool fp8_gemm_autotune() { return g_autotune.load(); }

bool fp8_tensor_cores(int device_index) {
  if (device_index < 0 || device_index >= cuda_device_count()) return false;
  return compute_capability(device_index) >= 89;
}

Fp8Cast cast_to_fp8(const Tensor& x, DType fp8, const Tensor& scale, const Tensor& amax, bool transpose,
                    bool column_sums) {
  const char* op = "cast_to_fp8";
  check::dtype_in(op, "x", x, kHigh);
  check_fp8_dtype(op, "fp8", fp8);
  check_scalar(op, "scale", scale, x.device());
  if (amax.defined()) {
    check::dtype_is(op, "amax", amax, DType::f32);
    check::device_is(op, "amax", amax, x.device());
    if (amax.numel() < 1) fail_arg(op, "amax", "an f32 tensor with at least one element", "an empty tensor");
  }
  if (transpose || column_sums) check::dim_in(op, "x", x, 1, 64);
  autograd::refuse(op, {x});
  const int64_t cols = x.dim() == 0 ? 1 : x.size(-1), rows = rows_of(x);
  Fp8Cast r;
  r.data = Tensor::empty(x.shape(), fp8, x.device());
  if (transpose) r.transposed = Tensor::empty({cols, rows}, fp8, x.device());
  if (column_sums) r.column_sums = Tensor::empty({cols}, x.dtype(), x.device());
  void* qt = transpose ? r.transposed.data() : nullptr;
  void* sums = column_sums ? r.column_sums.data() : nullptr;
  float* amax_p = amax.defined() ? static_cast<float*>(amax.data()) : nullptr;
  if (x.device().is_cpu()) {
    cpu::fp8_cast(x.dtype(), x.data(), fp8, host_scalar(scale), r.data.data(), qt, rows, cols, amax_p, sums);
  } else {
    detail::DeviceGuard g(x.device());
    Tensor partial = column_sums ? Tensor::empty({kernels::fp8_colsum_tiles(rows), cols}, DType::f32, x.device())
                                 : Tensor();
    kernels::fp8_cast(x.dtype(), x.data(), fp8, static_cast<const float*>(scale.data()), r.data.data(), qt, rows,
                      cols, amax_p, column_sums ? static_cast<float*>(partial.data()) : nullptr, sums,
                      detail::stream(x.device()));
  }
  return r;
}

Tensor fp8_amax(const Tensor& x) {
  const char* op = "fp8_amax";
  check::dtype_in(op, "x", x, kHigh);
  autograd::refuse(op, {x});
  Tensor amax = Tensor::empty({}, DType::f32, x.device());
  auto* amax_p = static_cast<float*>(amax.data());
  if (x.device().is_cpu()) {
    cpu::fp8_cast(x.dtype(), x.data(), DType::f8_e4m3, 1.0f, nullptr, nullptr, 1, x.numel(), amax_p);
  } else {
    detail::DeviceGuard g(x.device());
    int blocks = 0;
    if (const uint32_t* partials = detail::amax_hint(x, &blocks))  // x's producer kept its amax
      kernels::fp8_amax_partials(partials, blocks, amax_p, detail::stream(x.device()));
    else
      kernels::fp8_cast(x.dtype(), x.data(), DType::f8_e4m3, nullptr, nullptr, nullptr, 1, x.numel(), amax_p, nullptr,
                        nullptr, detail::stream(x.device()));
  }
  return amax;
}

Tensor dequantize_fp8(const Tensor& q, const Tensor& scale_inv, DType out) {
  const char* op = "dequantize_fp8";
  check::dtype_in(op, "q", q, kFp8);
  check_scalar(op, "scale_inv", scale_inv, q.device());
  if (out != DType::f32 && out != DType::f16 && out != DType::bf16)
    fail_arg(op, "out", check::dtypes_str(kHigh), dtype_name(out));
  Tensor r = Tensor::empty(q.shape(), out, q.device());
  if (q.device().is_cpu()) {
    cpu::fp8_dequantize(q.dtype(), q.data(), host_scalar(scale_inv), out, r.data(), q.numel());
  } else {
    detail::DeviceGuard g(q.device());
    kernels::fp8_dequantize(q.dtype(), q.data(), static_cast<const float*>(scale_inv.data()), out, r.data(),
                            q.numel(), detail::stream(q.device()));
  }
  return r;
}

Fp8Scale fp8_current_scale(const Tensor& amax, DType fp8, int margin) {
  const char* op = "fp8_current_scale";
  check::defined(op, "amax", amax);
  check_scalar(op, "amax", amax, amax.device());
  check_fp8_dtype(op, "fp8", fp8);
  const float fmax = fp8_max(fp8);
  if (margin < 0 || margin > 64) fail_arg(op, "margin", "0 to 64", cat(margin));
  Fp8Scale s = new_scale(amax.device());
  if (amax.device().is_cpu()) {
    cpu::fp8_current_scale(host_scalar(amax), fmax, margin, static_cast<float*>(s.scale.data()),
                           static_cast<float*>(s.scale_inv.data()));
  } else {
    detail::DeviceGuard g(amax.device());
    kernels::fp8_current_scale(static_cast<const float*>(amax.data()), fmax, margin,
                               static_cast<float*>(s.scale.data()),
                               static_cast<float*>(s.scale_inv.data()), detail::stream(amax.device()));
  }
  return s;
}

Fp8Scale fp8_delayed_scale(const Tensor& history, const Fp8Scale& previous, DType fp8, const DelayedScaling& recipe) {
  const char* op = "fp8_delayed_scale";
  check::defined(op, "history", history);
  check::dtype_is(op, "history", history, DType::f32);
  check::shape_is(op, "history", history, {recipe.history_len});
  if (recipe.history_len < 1) fail_arg(op, "recipe.history_len", "at least 1", cat(recipe.history_len));
  check_scalar(op, "previous.scale", previous.scale, history.device());
  check_fp8_dtype(op, "fp8", fp8);
  const float fmax = fp8_max(fp8);
  if (recipe.margin < 0 || recipe.margin > 64) fail_arg(op, "recipe.margin", "0 to 64", cat(recipe.margin));
  autograd::refuse(op, {history});
  const bool use_max = recipe.algo == AmaxAlgo::max;
  Fp8Scale s = new_scale(history.device());
  auto* h = static_cast<float*>(history.data());
  if (history.device().is_cpu()) {
    cpu::fp8_delayed_scale(h, recipe.history_len, use_max, host_scalar(previous.scale), fmax, recipe.margin,
                           static_cast<float*>(s.scale.data()), static_cast<float*>(s.scale_inv.data()));
  } else {
    detail::DeviceGuard g(history.device());
    kernels::fp8_delayed_scale(h, recipe.history_len, use_max, static_cast<const float*>(previous.scale.data()), fmax,
                               recipe.margin, static_cast<float*>(s.scale.data()),
                               static_cast<float*>(s.scale_inv.data()), detail::stream(history.device()));
  }
  return s;
}

Fp8Scale fp8_unit_scale(Device device) {
  return {Tensor::ones({}, DType::f32, device), Tensor::ones({}, DType::f32, device)};
}

namespace {

void check_gemm(const char* op, const Tensor& a, const Tensor& b, DType out_dtype, const Tensor& bias) {
  check::defined(op, "a", a);
  check::dtype_in(op, "a", a, kFp8);
  check::dim_in(op, "a", a, 2, 8);
  check::defined(op, "b", b);
  check::dtype_in(op, "b", b, kFp8);
  check::device_is(op, "b", b, a.device());
  check::dim_in(op, "b", b, 2, 2);
  if (b.size(1) != a.size(-1))
    fail_arg(op, "b", cat("shape (N, ", a.size(-1), ") to match a ", shape_str(a.shape()), " (b is used transposed)"),
             cat("shape ", shape_str(b.shape())));
  if (out_dtype != DType::f32 && out_dtype != DType::f16 && out_dtype != DType::bf16)
    fail_arg(op, "out_dtype", check::dtypes_str(kHigh), dtype_name(out_dtype));
  if (bias.defined()) {
    check::dtype_is(op, "bias", bias, out_dtype);
    check::device_is(op, "bias", bias, a.device());
    check::shape_is(op, "bias", bias, {b.size(0)});
  }
  autograd::refuse(op, {bias});
  if (a.device().is_cuda()) detail::require_device(op, a.device());
}

}  // namespace

Fp8GemmPath matmul_fp8_path(const Tensor& a, const Tensor& b, DType out_dtype, const Tensor& bias, bool fast_accum) {
  check_gemm("matmul_fp8_path", a, b, out_dtype, bias);
  detail::DeviceGuard g(a.device());
  return route(a, b, out_dtype, bias, fast_accum).path;
}

Tensor matmul_fp8(const Tensor& a, const Tensor& b, const Tensor& scale_a, const Tensor& scale_b, DType out_dtype,
                  const Tensor& bias, bool fast_accum) {
  const char* op = "matmul_fp8";
  check_gemm(op, a, b, out_dtype, bias);
  check_scalar(op, "scale_a", scale_a, a.device());
  check_scalar(op, "scale_b", scale_b, a.device());
  Shape out_shape(a.shape().begin(), a.shape().end() - 1);
  out_shape.push_back(b.size(0));
  const Device dev = a.device();
  detail::DeviceGuard g(dev);
  const Problem p = route(a, b, out_dtype, bias, fast_accum);
  if (p.path == Fp8GemmPath::cpu_emulation) {
    Tensor out = Tensor::empty(out_shape, out_dtype, dev);
    cpu::fp8_gemm(a.dtype(), a.data(), b.dtype(), b.data(), host_scalar(scale_a), host_scalar(scale_b),
                  bias.defined() ? bias.data() : nullptr, out_dtype, out.data(), p.m, p.n, p.k);
    return out;
  }
  NoGradGuard no_grad;
  if (p.m == 0 || p.n == 0) return Tensor::empty(out_shape, out_dtype, dev);
  if (p.path == Fp8GemmPath::dequantize_fallback)
    return fallback(a.reshape({p.m, p.k}), b, scale_a, scale_b, out_dtype, bias).reshape(out_shape);
  const void* bias_p = p.epilogue_bias ? bias.data() : nullptr;
  Tensor out;
  if (p.path == Fp8GemmPath::cublaslt) {
    out = Tensor::empty(out_shape, out_dtype, dev);
    run_plan(*p.plan, dev, a.data(), b.data(), scale_a, scale_b, bias_p, out);
  } else {
    const int64_t mp = round16(p.m), np = round16(p.n), kp = round16(p.k);
    Tensor ap = padded(a, p.m, p.k, mp, kp), bp = padded(b, p.n, p.k, np, kp);
    Tensor biasp = p.epilogue_bias ? padded(bias, 1, p.n, 1, np) : Tensor();
    Tensor outp = Tensor::empty({mp, np}, out_dtype, dev);
    run_plan(*p.plan, dev, ap.data(), bp.data(), scale_a, scale_b, p.epilogue_bias ? biasp.data() : nullptr, outp);
    out = padded(outp, mp, np, p.m, p.n).reshape(out_shape);
  }
  if (bias.defined() && !p.epilogue_bias) out = add_bias(out, bias);
  return out;
}

namespace detail {

bool fp8_gemm_scaled_available(Fp8GemmScales scales, Device device, int64_t m, int64_t n, int64_t k, DType a, DType b,
                               DType out) {
  if (!device.is_cuda() || compute_capability(device.index) != 90 || m <= 0 || n <= 0 || k <= 0 || m % 16 ||
      n % 16 || k % 16)
    return false;
  if (scales == Fp8GemmScales::block128 && (n % 128 || k % 128)) return false;
  DeviceGuard g(device);
  const PlanKey key{device.index, m, n, k, a, b, out, false, false, false, 16, 16, 1 + static_cast<int>(scales)};
  return plan_for(key).ok;
}

void fp8_gemm_scaled_into(Fp8GemmScales scales, const Tensor& a, const Tensor& b, const Tensor& a_scale,
                          const Tensor& b_scale, Tensor& out) {
  const char* op = "fp8_gemm_scaled_into";
  const Device dev = a.device();
  const int64_t m = a.size(0), k = a.size(1), n = b.size(0);
  for (const Tensor* t : {&a, &b, &a_scale, &b_scale, static_cast<const Tensor*>(&out)})
    if (alignment(t->data()) < 16) fail(op, "operands must be 16-byte aligned");
  const bool outer = scales == Fp8GemmScales::outer;
  if (a_scale.numel() != (outer ? m : k / 128 * m) || b_scale.numel() != (outer ? n : n / 128 * (k / 128)))
    fail(op, "scale tensors of the wrong size");
  if (!fp8_gemm_scaled_available(scales, dev, m, n, k, a.dtype(), b.dtype(), out.dtype()))
    fail(op, cat("no cuBLASLt algorithm for (", m, ", ", k, ") x (", n, ", ", k, ")"));
  DeviceGuard g(dev);
  const PlanKey key{dev.index, m, n, k, a.dtype(), b.dtype(), out.dtype(), false, false, false, 16, 16,
                    1 + static_cast<int>(scales)};
  run_plan(plan_for(key), dev, a.data(), b.data(), a_scale, b_scale, nullptr, out);
}

}  // namespace detail
}  // namespace octet
