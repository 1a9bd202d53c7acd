// (to be written) benchmarks of the fp8_gemm family for octet bench.
#include "tools/bench.hpp"
