// (to be written) tests of the fp8_gemm family.
#include "tests/helpers.hpp"
