// (to be written) octet bench.
#include <cstdio>

#include "tools/commands.hpp"

namespace octet::cli {
int bench(const Args&) {
  std::fprintf(stderr, "octet bench: not built yet\n");
  return 2;
}
}  // namespace octet::cli
