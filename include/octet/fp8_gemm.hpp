// (to be written) the fp8_gemm family.
#pragma once
#include "octet/tensor.hpp"
