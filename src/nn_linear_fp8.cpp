// (to be written) nn::LinearFP8: real FP8 tensor-core layer on matmul_fp8 (fp8_gemm.hpp).
#include "octet/nn.hpp"
