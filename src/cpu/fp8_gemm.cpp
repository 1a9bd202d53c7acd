// CPU reference of the fp8_gemm family: casts with CUDA's SATFINITE rounding (convert.hpp), the
// amax as an exact bit-max, the scale updates, and the FP8 GEMM emulation (exact FP8 products
// accumulated in f32 in k order, then scaled once). Plain loops; rows split over threads.
#include "src/cpu/fp8_gemm.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <vector>

#include "octet/convert.hpp"
#include "src/cpu/element.hpp"
#include "src/cpu/parallel.hpp"

namespace octet::cpu {
namespace {

uint8_t to_fp8(DType fp8, float v) { return fp8 == DType::f8_e4m3 ? float_to_e4m3_bits(v) : float_to_e5m2_bits(v); }

std::array<float, 256> fp8_table(DType fp8) {
  std::array<float, 256> t{};
  for (int i = 0; i < 256; ++i) {
    const auto b = static_cast<uint8_t>(i);
    t[static_cast<size_t>(i)] = fp8 == DType::f8_e4m3 ? e4m3_bits_to_float(b) : e5m2_bits_to_float(b);
  }
  return t;
}

uint32_t float_bits(float v) {
  uint32_t b;
  std::memcpy(&b, &v, sizeof b);
  return b;
}

}  // namespace

void fp8_cast(DType in_t, const void* x, DType fp8, float scale, void* q, void* q_t, int64_t rows, int64_t cols,
              float* amax, void* colsum) {
  std::atomic<uint32_t> max_bits{0};
  visit_float(in_t, "cast_to_fp8", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* in = static_cast<const T*>(x);
    auto* out = static_cast<uint8_t*>(q);
    auto* out_t = static_cast<uint8_t*>(q_t);
    parallel_for(rows, std::max<int64_t>(1, 65536 / std::max<int64_t>(cols, 1)), [&](int64_t r0, int64_t r1) {
      uint32_t m = 0;
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t c = 0; c < cols; ++c) {
          const float v = load_f32(in[r * cols + c]);
          m = std::max(m, amax_bits(float_bits(v)));
          if (!out) continue;
          const uint8_t b = to_fp8(fp8, v * scale);
          out[r * cols + c] = b;
          if (out_t) out_t[c * rows + r] = b;
        }
      }
      uint32_t prev = max_bits.load();
      while (prev < m && !max_bits.compare_exchange_weak(prev, m)) {}
    });
    if (!colsum) return;
    std::vector<double> acc(static_cast<size_t>(cols), 0.0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) acc[static_cast<size_t>(c)] += load_f32(in[r * cols + c]);
    for (int64_t c = 0; c < cols; ++c) static_cast<T*>(colsum)[c] = store<T>(acc[static_cast<size_t>(c)]);
  });
  if (amax) {
    const uint32_t b = max_bits.load();
    std::memcpy(amax, &b, sizeof b);
  }
}

void fp8_dequantize(DType fp8, const void* q, float scale_inv, DType out_t, void* out, int64_t n) {
  const std::array<float, 256> table = fp8_table(fp8);
  const auto* in = static_cast<const uint8_t*>(q);
  visit_float(out_t, "dequantize_fp8", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* o = static_cast<T*>(out);
    for (int64_t i = 0; i < n; ++i) o[i] = store<T>(table[in[i]] * scale_inv);
  });
}

void fp8_gemm(DType a_t, const void* a, DType b_t, const void* b, float scale_a, float scale_b, const void* bias,
              DType out_t, void* out, int64_t m, int64_t n, int64_t k) {
  const std::array<float, 256> ta = fp8_table(a_t), tb = fp8_table(b_t);
  const auto* a8 = static_cast<const uint8_t*>(a);
  const auto* b8 = static_cast<const uint8_t*>(b);
  std::vector<float> bf(static_cast<size_t>(n * k));
  for (int64_t i = 0; i < n * k; ++i) bf[static_cast<size_t>(i)] = tb[b8[i]];
  const float s = scale_a * scale_b;
  visit_float(out_t, "matmul_fp8", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* o = static_cast<T*>(out);
    const T* bias_t = static_cast<const T*>(bias);
    parallel_for(m, std::max<int64_t>(1, 1048576 / std::max<int64_t>(n * k, 1)), [&](int64_t r0, int64_t r1) {
      std::vector<float> row(static_cast<size_t>(k));
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t i = 0; i < k; ++i) row[static_cast<size_t>(i)] = ta[a8[r * k + i]];
        for (int64_t c = 0; c < n; ++c) {
          const float* bc = bf.data() + c * k;
          float acc = 0.0f;
          for (int64_t i = 0; i < k; ++i) acc += row[static_cast<size_t>(i)] * bc[i];
          float v = acc * s;
          if (bias_t) v += load_f32(bias_t[c]);
          o[r * n + c] = store<T>(v);
        }
      }
    });
  });
}

void fp8_current_scale(float amax, float fp8_max, int margin, float* scale, float* scale_inv) {
  const float s = fp8_scale_for(amax, fp8_max, margin, 1.0f);
  *scale = s;
  *scale_inv = 1.0f / s;
}

void fp8_delayed_scale(float* history, int64_t len, bool use_max, float previous, float fp8_max, int margin,
                       float* scale, float* scale_inv) {
  float amax = history[0];
  if (use_max) {
    amax = 0.0f;
    for (int64_t i = 0; i < len; ++i) amax = history[i] > amax ? history[i] : amax;  // NaN ignored
  }
  const float s = fp8_scale_for(amax, fp8_max, margin, previous);
  *scale = s;
  *scale_inv = 1.0f / s;
  for (int64_t i = len - 1; i >= 1; --i) history[i] = history[i - 1];
  history[0] = 0.0f;
}

}  // namespace octet::cpu
