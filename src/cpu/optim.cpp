// CPU reference of the optim family (src/cpu/optim.hpp): the slots of kernels/optim.cuh updated
// with the shared arithmetic of kernels/optim_math.cuh; blocks of 8-bit states are dequantized,
// updated, and requantized with quantize_blockwise's absmax and index rule (quant_index.cuh).
#include "src/cpu/optim.hpp"

#include <cmath>

#include "src/cpu/element.hpp"
#include "src/cpu/parallel.hpp"

namespace octet::cpu {
namespace {

namespace om = optim_math;
namespace qi = quant_index;
using kernels::OptimKind;
using kernels::OptimSlot;

template <class T>
float get(const void* base, int64_t i) {
  return load_f32(static_cast<const T*>(base)[i]);
}
template <class T>
void put(void* base, int64_t i, float v) {
  static_cast<T*>(base)[i] = store<T>(v);
}

void advance(const OptimSlot& s, bool eightbit) {
  om::StepState& st = *s.step_state;
  st.step += 1;
  st.scalars = eightbit ? om::step_scalars_8bit(s.hyper, st.step) : om::step_scalars(s.hyper, st.step);
}

template <class P, class S>
void elementwise(OptimKind kind, const OptimSlot& s) {
  const om::StepScalars sc = s.step_state->scalars;
  const float scale = s.gnorm_scale ? *s.gnorm_scale : 1.0f;
  const bool momentum = s.state1 && sc.momentum != 0.0f;
  parallel_for(s.numel, 1 << 16, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const float p = get<P>(s.param, i), g = get<P>(s.grad, i);
      if (kind == OptimKind::sgd) {
        const om::Sgd r = om::sgd_update(p, g, momentum ? get<float>(s.state1, i) : 0.0f, scale, momentum, sc);
        put<P>(s.param, i, r.p);
        if (momentum) put<float>(s.state1, i, r.buf);
        continue;
      }
      const float m = get<S>(s.state1, i), v = get<S>(s.state2, i);
      const om::Adam r = kind == OptimKind::adamw ? om::adamw_update(p, g, m, v, scale, sc)
                                                  : om::adamw8bit_update(p, g, m, v, scale, sc);
      put<P>(s.param, i, r.p);
      put<S>(s.state1, i, r.m);
      put<S>(s.state2, i, r.v);
    }
  });
}

template <class P>
void blockwise(const OptimSlot& s, const kernels::OptimTables& tab) {
  constexpr int64_t B = kernels::kOptimBlock;
  const om::StepScalars sc = s.step_state->scalars;
  const float scale = s.gnorm_scale ? *s.gnorm_scale : 1.0f;
  uint8_t* codes_m = static_cast<uint8_t*>(s.state1);
  uint8_t* codes_v = static_cast<uint8_t*>(s.state2);
  parallel_for((s.numel + B - 1) / B, 64, [&](int64_t b0, int64_t b1) {
    float m[B], v[B];
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t lo = b * B, hi = std::min(s.numel, lo + B);
      float max_m = 0.0f, max_v = 0.0f;  // NaN is ignored, as in quantize_blockwise
      for (int64_t i = lo; i < hi; ++i) {
        const om::Adam r = om::adamw8bit_update(get<P>(s.param, i), get<P>(s.grad, i),
                                                qi::mul_nan(tab.m.code[codes_m[i]], s.absmax1[b]),
                                                qi::mul_nan(tab.v.code[codes_v[i]], s.absmax2[b]), scale, sc);
        put<P>(s.param, i, r.p);
        m[i - lo] = r.m;
        v[i - lo] = r.v;
        if (std::fabs(r.m) > max_m) max_m = std::fabs(r.m);
        if (std::fabs(r.v) > max_v) max_v = std::fabs(r.v);
      }
      s.absmax1[b] = max_m;
      s.absmax2[b] = max_v;
      const qi::Scale scale_m = qi::block_scale(max_m), scale_v = qi::block_scale(max_v);
      for (int64_t i = lo; i < hi; ++i) {
        codes_m[i] = static_cast<uint8_t>(qi::closed_form(tab.m.code, tab.m.mid, qi::block_x(m[i - lo], scale_m)));
        codes_v[i] = static_cast<uint8_t>(qi::closed_form(tab.v.code, tab.v.mid, qi::block_x(v[i - lo], scale_v)));
      }
    }
  });
}

// The sum of squares of chunk c of x in the CUDA order (kernels/optim.cuh grad_sumsq).
template <class T>
double chunk_sumsq(const void* x, int64_t n, int64_t c) {
  double lane[256];
  for (int t = 0; t < 256; ++t) {
    lane[t] = 0.0;
    for (int k = 0; k < 4; ++k) {
      const int64_t i = c * kernels::kOptimChunk + 4 * t + k;
      if (i < n) {
        const double e = get<T>(x, i);
        lane[t] += e * e;  // exact square of a float; one rounding in the sum
      }
    }
  }
  for (int half = 128; half > 0; half >>= 1)
    for (int t = 0; t < half; ++t) lane[t] += lane[t + half];
  return lane[0];
}

}  // namespace

void optim_step(OptimKind kind, DType param_dtype, DType state_dtype, const OptimSlot* slots, int64_t count,
                const kernels::OptimTables* tables) {
  const bool eightbit = kind == OptimKind::adamw8bit_f32 || kind == OptimKind::adamw8bit_blockwise;
  visit_float(param_dtype, "optim::step", [&](auto ptag) {
    using P = typename decltype(ptag)::type;
    for (int64_t k = 0; k < count; ++k) {
      const OptimSlot& s = slots[k];
      advance(s, eightbit);
      if (kind == OptimKind::adamw8bit_blockwise)
        blockwise<P>(s, *tables);
      else if (state_dtype == DType::bf16)
        elementwise<P, BFloat16>(kind, s);
      else
        elementwise<P, float>(kind, s);
    }
  });
}

void grad_sumsq(DType grad_dtype, const OptimSlot* slots, int64_t count, double* partials) {
  visit_float(grad_dtype, "clip_grad_norm_", [&](auto tag) {
    using T = typename decltype(tag)::type;
    for (int64_t k = 0; k < count; ++k) {
      const int64_t chunks = kernels::chunks_of(slots[k].numel);
      for (int64_t c = 0; c < chunks; ++c) *partials++ = chunk_sumsq<T>(slots[k].grad, slots[k].numel, c);
    }
  });
}

void grad_norm_finish(const double* partials, int64_t count, float max_norm, float* out) {
  double lane[256];
  for (int t = 0; t < 256; ++t) {
    lane[t] = 0.0;
    for (int64_t i = t; i < count; i += 256) lane[t] += partials[i];
  }
  for (int half = 128; half > 0; half >>= 1)
    for (int t = 0; t < half; ++t) lane[t] += lane[t + half];
  const float norm = static_cast<float>(std::sqrt(lane[0]));
  float coef = om::fdiv(max_norm, om::fadd(norm, 1e-6f));
  if (coef > 1.0f) coef = 1.0f;
  out[0] = norm;
  out[1] = coef;
}

void grad_scale(DType grad_dtype, const OptimSlot* slots, int64_t count, const float* coef) {
  const float c = *coef;
  if (c == 1.0f) return;
  visit_float(grad_dtype, "clip_grad_norm_", [&](auto tag) {
    using T = typename decltype(tag)::type;
    for (int64_t k = 0; k < count; ++k) {
      void* g = const_cast<void*>(slots[k].grad);
      parallel_for(slots[k].numel, 1 << 16, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) put<T>(g, i, om::fmul(get<T>(g, i), c));
      });
    }
  });
}

}  // namespace octet::cpu
