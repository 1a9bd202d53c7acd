// (to be written) benchmarks of the quant family for octet bench.
#include "tools/bench.hpp"
