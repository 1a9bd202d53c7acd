// The arithmetic of octet::optim, shared by the CPU reference (g++) and the CUDA kernels (nvcc):
// the per-step scalars (bias corrections, step sizes) and the per-element updates. Every function
// is __host__ __device__ and spells each float operation out (fmul/fadd/fdiv/fsqrt/ffma: one
// correctly rounded IEEE operation on both devices, no contraction), so a parameter and its states
// get the same bits on the CPU and on the GPU. NaN results are the GPU's canonical 0x7FFFFFFF on
// both devices (x86 would keep an operand's payload).
// Bias corrections: beta^t in double by binary powering (the same sequence of double products on
// both devices; pow() differs between libm and CUDA), then the step's scalars in double, each
// rounded once to float.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#define OCTET_OPT_HD __host__ __device__ __forceinline__
#else
#define OCTET_OPT_HD inline
#endif

namespace octet::optim_math {

// Per-group hyperparameters as the kernels read them (f64 [8] on the parameters' device): written
// by the optimizer's setters, read by every step, so a replayed CUDA graph sees the current values.
enum Hyper : int { kLr, kWeightDecay, kBeta1, kBeta2, kEps, kMomentum, kDampening, kNesterov, kHyperCount };

// What one step of one parameter uses, computed from the hyperparameters and the step number t.
struct StepScalars {
  float decay;  // AdamW: 1 - lr wd (always applied); AdamW8bit: 1 - lr wd (applied when != 1)
  float beta1, one_minus_beta1, beta2, one_minus_beta2;
  float step_size;                                            // AdamW: lr / (1 - b1^t); AdamW8bit: -lr c2 / c1
  float bias_scale;                                           // AdamW: 1 / sqrt(1 - b2^t)
  float eps;                                                  // AdamW: eps; AdamW8bit: c2 eps
  float neg_lr, weight_decay, momentum, one_minus_dampening;  // SGD
  int32_t nesterov, first_step;                               // SGD
};

// A parameter's step counter (the number of updates so far) and the scalars of its latest step:
// 64 bytes of device memory per parameter, advanced by the step's first kernel.
struct StepState {
  int64_t step;
  StepScalars scalars;
};
static_assert(sizeof(StepState) == 64, "StepState is stored as i64 [8]");

OCTET_OPT_HD float canonical(float y) {
#ifdef __CUDA_ARCH__
  return y;
#else
  if (y == y) return y;
  const uint32_t nan = 0x7FFFFFFFu;
  float out;
  std::memcpy(&out, &nan, sizeof out);
  return out;
#endif
}

OCTET_OPT_HD float fmul(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return canonical(a * b);
#endif
}
OCTET_OPT_HD float fadd(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return canonical(a + b);
#endif
}
OCTET_OPT_HD float fdiv(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(a, b);
#else
  return canonical(a / b);
#endif
}
OCTET_OPT_HD float fsqrt(float a) {
#ifdef __CUDA_ARCH__
  return __fsqrt_rn(a);
#else
  return canonical(std::sqrt(a));
#endif
}
// a * b + c rounded once.
OCTET_OPT_HD float ffma(float a, float b, float c) {
#ifdef __CUDA_ARCH__
  return __fmaf_rn(a, b, c);
#else
  return canonical(std::fma(a, b, c));
#endif
}
OCTET_OPT_HD bool finite(float x) { return x - x == 0.0f; }  // false for Inf and NaN

OCTET_OPT_HD double dmul(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}

// b^t (t >= 1) by binary powering: the same double products in the same order on both devices.
OCTET_OPT_HD double power(double b, int64_t t) {
  double result = 1.0, square = b;
  while (t > 0) {
    if (t & 1) result = dmul(result, square);
    t >>= 1;
    if (t > 0) square = dmul(square, square);
  }
  return result;
}

// The scalars of step t (t >= 1) from the group's hyperparameters h. Double operations are the
// IEEE ones on both devices (nvcc never contracts double products written as dmul).
OCTET_OPT_HD StepScalars step_scalars(const double* h, int64_t t) {
  StepScalars s{};
  const double lr = h[kLr], wd = h[kWeightDecay], b1 = h[kBeta1], b2 = h[kBeta2], eps = h[kEps];
  const double lr_wd = dmul(lr, wd);
  s.decay = static_cast<float>(1.0 - lr_wd);
  s.beta1 = static_cast<float>(b1);
  s.one_minus_beta1 = static_cast<float>(1.0 - b1);
  s.beta2 = static_cast<float>(b2);
  s.one_minus_beta2 = static_cast<float>(1.0 - b2);
  const double c1 = 1.0 - power(b1, t), bc2 = 1.0 - power(b2, t);
  s.bias_scale = static_cast<float>(1.0 / std::sqrt(bc2));
  s.eps = static_cast<float>(eps);
  s.step_size = static_cast<float>(lr / c1);
  s.neg_lr = static_cast<float>(-lr);
  s.weight_decay = static_cast<float>(wd);
  s.momentum = static_cast<float>(h[kMomentum]);
  s.one_minus_dampening = static_cast<float>(1.0 - h[kDampening]);
  s.nesterov = h[kNesterov] != 0.0;
  s.first_step = t == 1;
  return s;
}

// The AdamW8bit variant (bitsandbytes' blockwise 8-bit Adam): step_size = -lr c2 / c1 and
// eps = c2 eps with c2 = sqrt(1 - b2^t); decay = 1 - lr wd only when wd > 0.
OCTET_OPT_HD StepScalars step_scalars_8bit(const double* h, int64_t t) {
  StepScalars s = step_scalars(h, t);
  const double c1 = 1.0 - power(h[kBeta1], t), c2 = std::sqrt(1.0 - power(h[kBeta2], t));
  s.step_size = static_cast<float>(-h[kLr] * c2 / c1);
  s.eps = static_cast<float>(c2 * h[kEps]);
  if (!(h[kWeightDecay] > 0.0)) s.decay = 1.0f;
  return s;
}

// AdamW (torch.optim.AdamW): p = p (1 - lr wd); m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
// p = p - step_size * m / (sqrt(v) bias_scale + eps). gnorm_scale multiplies g first (1: none).
struct Adam {
  float p, m, v;
};
OCTET_OPT_HD Adam adamw_update(float p, float g, float m, float v, float gnorm_scale, const StepScalars& s) {
  g = fmul(g, gnorm_scale);
  p = fmul(p, s.decay);
  m = ffma(s.beta1, m, fmul(s.one_minus_beta1, g));
  v = ffma(s.beta2, v, fmul(fmul(s.one_minus_beta2, g), g));
  const float denom = ffma(fsqrt(v), s.bias_scale, s.eps);
  p = ffma(-s.step_size, fdiv(m, denom), p);
  return {p, m, v};
}

// AdamW8bit on dequantized (or f32) states, bitsandbytes' order: a non-finite g leaves p as it is
// and zeroes both states; g *= gnorm_scale; v = b2 v + (1 - b2) g^2; m = b1 m + (1 - b1) g;
// p += step_size * m / (sqrt(v) + eps); p *= decay when decay != 1.
OCTET_OPT_HD Adam adamw8bit_update(float p, float g, float m, float v, float gnorm_scale, const StepScalars& s) {
  if (!finite(g)) return {p, 0.0f, 0.0f};
  g = fmul(g, gnorm_scale);
  v = ffma(s.beta2, v, fmul(s.one_minus_beta2, fmul(g, g)));
  m = ffma(s.beta1, m, fmul(s.one_minus_beta1, g));
  p = ffma(s.step_size, fdiv(m, fadd(fsqrt(v), s.eps)), p);
  if (s.decay != 1.0f) p = fmul(p, s.decay);
  return {p, m, v};
}

// SGD (torch.optim.SGD): d = g + wd p; with momentum: buf = d on the first step, else
// buf = momentum buf + (1 - dampening) d, and d = d + momentum buf (nesterov) or buf; p = p - lr d.
struct Sgd {
  float p, buf;
};
OCTET_OPT_HD Sgd sgd_update(float p, float g, float buf, float gnorm_scale, bool has_momentum, const StepScalars& s) {
  float d = fmul(g, gnorm_scale);
  if (s.weight_decay != 0.0f) d = ffma(s.weight_decay, p, d);
  if (has_momentum) {
    buf = s.first_step ? d : ffma(s.one_minus_dampening, d, fmul(s.momentum, buf));
    d = s.nesterov ? ffma(s.momentum, buf, d) : buf;
  }
  return {ffma(s.neg_lr, d, p), buf};
}

}  // namespace octet::optim_math
