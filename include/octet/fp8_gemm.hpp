// The real FP8 path: scaled casts to f8_e4m3 / f8_e5m2 with a fused amax (and transposed copy),
// per-tensor scaling recipes kept on the device, and the scaled FP8 GEMM on cuBLASLt tensor cores.
// Conventions:
// - A scale is a one-element f32 tensor on the data's device. `scale` is the quantization factor
//   (q = sat_rne(x * scale)); `scale_inv` = 1 / scale is the dequantization factor the GEMM takes.
// - Nothing here synchronizes the host: amax, scales and histories stay device scalars.
// - CPU versions give the same bits for casts, amax and scales, and emulate the GEMM (exact FP8
//   products, f32 accumulation). Nothing here records on the autograd tape (nn::LinearFP8 does).
// docs/fp8-gemm.md has the semantics, the layout mapping and the design.
#pragma once
#include <cstdint>

#include "octet/tensor.hpp"

namespace octet {

// Largest finite value of an FP8 dtype: 448 (f8_e4m3) or 57344 (f8_e5m2).
float fp8_max(DType fp8);
// True when cuda:index has FP8 tensor cores (compute capability >= 8.9).
bool fp8_tensor_cores(int device_index = 0);

// ---- casts -------------------------------------------------------------------------------
struct Fp8Cast {
  Tensor data;        // x's shape, the FP8 dtype
  Tensor transposed;  // (cols, rows) for x viewed as (rows, cols = last dim); undefined unless asked
  Tensor column_sums; // (cols), x's dtype: sum over the rows of x (unscaled); undefined unless asked
};
// q = sat_rne(x * scale[0]) for x f32, f16 or bf16 (any shape; transpose and column_sums need
// dim >= 1), in one pass that also writes max|x| into amax[0] when amax (f32, >= 1 element) is
// given: the exact maximum, NaN (0x7FC00000) if any element is NaN, 0 for an empty x; the same on
// every run. column_sums: the same pass sums x's columns (a linear layer's bias gradient), in f32
// on CUDA (f64 on the CPU) in a fixed order, rounded once to x's dtype.
Fp8Cast cast_to_fp8(const Tensor& x, DType fp8, const Tensor& scale, const Tensor& amax = {},
                    bool transpose = false, bool column_sums = false);
// max |x| exactly as cast_to_fp8 writes it, as a () f32 tensor: the amax pass of current
// scaling (one vectorized read of x, no cast).
Tensor fp8_amax(const Tensor& x);
// float(q) * scale_inv[0] rounded to out (f32, f16 or bf16).
Tensor dequantize_fp8(const Tensor& q, const Tensor& scale_inv, DType out = DType::f32);

// ---- scaling recipes ---------------------------------------------------------------------
struct Fp8Scale {
  Tensor scale;      // () f32
  Tensor scale_inv;  // () f32, 1 / scale
};
// Current scaling from amax[0] (e.g. max_abs(x) of ops.hpp): scale = fp8_max / amax / 2^margin
// when amax is finite and > 0 (FLT_MAX if that overflows), otherwise 1. New tensors, one kernel.
Fp8Scale fp8_current_scale(const Tensor& amax, DType fp8, int margin = 0);

enum class AmaxAlgo { max, most_recent };
struct DelayedScaling {
  int64_t history_len = 1024;
  AmaxAlgo algo = AmaxAlgo::max;
  int margin = 0;
};
// Delayed scaling (TransformerEngine's amax-and-scale update) for one tensor. history (f32,
// (history_len)) has the latest amax in slot 0 (cast_to_fp8 writes it there). The update takes
// amax = max over the history (NaN entries ignored) or history[0]; the new scale is
// fp8_max / amax / 2^margin (FLT_MAX on overflow) when amax is finite and > 0, else previous.scale;
// then the history rolls by one (h[i] = h[i-1]) and h[0] = 0. Returns new scale tensors (the
// previous ones stay valid for backwards that still use them). One kernel.
Fp8Scale fp8_delayed_scale(const Tensor& history, const Fp8Scale& previous, DType fp8, const DelayedScaling& recipe);
// A fresh state: scale 1, history of zeros.
Fp8Scale fp8_unit_scale(Device device);

// ---- GEMM --------------------------------------------------------------------------------
// out (..., N) = (a * scale_a) (b * scale_b)^T + bias, with a (..., K) and b (N, K) FP8 tensors:
// both operands are K-contiguous, as a Linear layer's x and weight (y = x W^T). scale_a/scale_b
// are dequantization factors; out_dtype is f32, f16 or bf16; bias (N) has out_dtype.
// fast_accum skips the periodic promotion of FP8 partial sums (faster, less accurate).
// CUDA: cuBLASLt FP8 tensor cores (compute 32F); dims that are not multiples of 16 are padded
// with zeros; E5M2 x E5M2 (not offered by cuBLASLt) and GPUs without FP8 tensor cores take the
// dequantize + f32 GEMM fallback. CPU: emulation with f32 accumulation.
Tensor matmul_fp8(const Tensor& a, const Tensor& b, const Tensor& scale_a, const Tensor& scale_b, DType out_dtype,
                  const Tensor& bias = {}, bool fast_accum = true);

// Autotune of the cuBLASLt algorithm (off by default: on an H100 it changed the LinearFP8 step by
// less than the run-to-run noise, docs/fp8-gemm.md): for problems of at least 2^30 multiply-adds
// the first call of a plan also runs each of up to 8 heuristic candidates four times (a warm pass,
// then three rounds timed with CUDA events); a later call whose events have completed (queried,
// never waited for) keeps the fastest if it beats the heuristic's first choice by 3%. The first
// calls of a shape may so use another algorithm than the later ones (results within accumulation
// tolerance, not bit-identical). Plans are kept per setting: a switch applies from the next call.
void set_fp8_gemm_autotune(bool on);
bool fp8_gemm_autotune();

enum class Fp8GemmPath { cpu_emulation, cublaslt, cublaslt_padded, dequantize_fallback };
// The path matmul_fp8 takes for these operands (a cache miss may run a cuBLASLt heuristic query;
// a problem the heuristic rejects reports dequantize_fallback).
Fp8GemmPath matmul_fp8_path(const Tensor& a, const Tensor& b, DType out_dtype, const Tensor& bias = {},
                            bool fast_accum = true);

}  // namespace octet
