// (to be written) nn::LinearFP8Mixed and nn::LinearFP8Global on matmul_fp8_mixed/global.
#include "octet/nn.hpp"
