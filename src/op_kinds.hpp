// Names of the elementwise and reduction kernels shared by the CPU and CUDA implementations.
#pragma once

namespace octet {
enum class Binary { add, sub, mul, gelu_backward /* a = x, b = upstream grad */ };
enum class Unary { abs, scale /* x * alpha */, gelu, sign };
enum class Reduce { sum, mean, max_abs };
}  // namespace octet
