// The name the first API gave the simulated (bitsandbytes) FP8 family's header; it now lives in
// fp8_simulated.hpp, next to the real FP8 tensor-core family in fp8_gemm.hpp.
#pragma once
#include "octet/fp8_simulated.hpp"
