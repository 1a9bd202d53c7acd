// CPU reference of the clip family: sum of squares, the history update with the percentile
// (a stable sort of the 100 values, NaN last: the same element the CUDA rank picks) and scale_by.
#include "src/cpu/clip.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include "src/cpu/element.hpp"
#include "src/cpu/parallel.hpp"

namespace octet::cpu {
namespace {

constexpr int64_t kChunk = int64_t(1) << 16;
constexpr int kHistory = 100;

}  // namespace

double sum_squares(DType t, const void* x, int64_t n) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(static_cast<size_t>(chunks), 0.0);
  visit_float(t, "percentile_clipping", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* p = static_cast<const T*>(x);
    parallel_for(chunks, 1, [&](int64_t cb, int64_t ce) {
      for (int64_t c = cb; c < ce; ++c) {
        double s = 0.0;
        for (int64_t i = c * kChunk, e = std::min(n, i + kChunk); i < e; ++i) {
          const double v = load_f64(p[i]);
          s += v * v;
        }
        partial[static_cast<size_t>(c)] = s;
      }
    });
  });
  double total = 0.0;
  for (double s : partial) total += s;
  return total;
}

void clip_finish(double sumsq, float* gnorm_vec, int64_t step, int percentile, float* gnorm, float* clip_value,
                 float* scale) {
  const float sum = static_cast<float>(sumsq);
  const int slot = static_cast<int>(step % kHistory);
  for (int i = 0; i < kHistory; ++i) {
    if (i == slot) gnorm_vec[i] = sum;
    else if (step == 1) gnorm_vec[i] = gnorm_vec[i] + sum;
  }
  std::array<float, kHistory> sorted;
  std::copy(gnorm_vec, gnorm_vec + kHistory, sorted.begin());
  std::stable_sort(sorted.begin(), sorted.end(),
                   [](float a, float b) { return !std::isnan(a) && (std::isnan(b) || a < b); });
  const float g = std::sqrt(gnorm_vec[slot]), c = std::sqrt(sorted[static_cast<size_t>(percentile)]);
  *gnorm = g;
  *clip_value = c;
  *scale = g > c ? c / g : 1.0f;
}

void scale_by(DType t, void* x, int64_t n, float scale) {
  if (scale == 1.0f) return;
  visit_float(t, "scale_by_", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* p = static_cast<T*>(x);
    parallel_for(n, kChunk, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) p[i] = store<T>(load_f32(p[i]) * scale);
    });
  });
}

}  // namespace octet::cpu
