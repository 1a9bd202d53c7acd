// (to be written) octet demo.
#include <cstdio>

#include "tools/commands.hpp"

namespace octet::cli {
int demo(const Args&) {
  std::fprintf(stderr, "octet demo: not built yet\n");
  return 2;
}
}  // namespace octet::cli
