// (to be written) benchmarks of the clip family for octet bench.
#include "tools/bench.hpp"
