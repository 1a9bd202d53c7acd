// (to be written) dispatch and validation of the fp8_gemm family.
#include "octet/fp8_gemm.hpp"
