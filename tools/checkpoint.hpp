// The conversions of octet quantize / dequantize without their summary line, for octet bench:
// the same argument parsing and the same code path as the commands (checkpoint.cpp). Bad
// arguments throw UsageError, problems octet::Error.
#pragma once
#include <cstdint>

#include "tools/commands.hpp"

namespace octet::cli {

struct Converted {
  uint64_t in_bytes = 0, out_bytes = 0;  // tensor data read and written
};

Converted quantize_checkpoint(const Args& args);    // args as for `octet quantize`
Converted dequantize_checkpoint(const Args& args);  // args as for `octet dequantize`

}  // namespace octet::cli
