// CPU side of the fp8 family: nothing of its own. On the CPU the FP8 matmuls are the quant
// family's fake-quantize reference (src/cpu/quant.cpp) and the core CPU GEMM (detail::gemm_into,
// which materializes transposed operands), reached through src/fp8.cpp.
#include "octet/fp8.hpp"
