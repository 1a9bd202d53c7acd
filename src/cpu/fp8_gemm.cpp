// (to be written) CPU reference of the fp8_gemm family.
#include "octet/fp8_gemm.hpp"
