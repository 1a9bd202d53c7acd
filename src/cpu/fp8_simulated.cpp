// CPU side of the fp8_simulated family: nothing of its own. On the CPU the FP8 matmuls are the quant
// family's fake-quantize reference (src/cpu/quant.cpp) and the core CPU GEMM (detail::gemm_into,
// which materializes transposed operands), reached through src/fp8_simulated.cpp.
#include "octet/fp8_simulated.hpp"
