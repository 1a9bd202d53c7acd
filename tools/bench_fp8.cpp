// (to be written) benchmarks of the fp8 family for octet bench.
#include "tools/bench.hpp"
