// (to be written) octet quantize / dequantize / info.
#include <cstdio>

#include "tools/commands.hpp"

namespace octet::cli {
int quantize(const Args&) { std::fprintf(stderr, "not built yet\n"); return 2; }
int dequantize(const Args&) { std::fprintf(stderr, "not built yet\n"); return 2; }
int info(const Args&) { std::fprintf(stderr, "not built yet\n"); return 2; }
}  // namespace octet::cli
