// The octet program: dispatches to the subcommands in commands.hpp.
#include <cstdio>
#include <cstring>
#include <exception>

#include "octet/error.hpp"
#include "tools/commands.hpp"

namespace {

const char* kUsage =
    "usage: octet <command> [options]\n"
    "  demo        train a small MLP with f32, FP8-mixed and FP8-global layers (--device, --steps)\n"
    "  bench       benchmark the kernel families against the device's ceilings (--json FILE)\n"
    "  doctor      devices, versions, FP8 support and build options\n"
    "  quantize    IN OUT  quantize the floating tensors of a safetensors checkpoint\n"
    "  dequantize  IN OUT  restore a quantized checkpoint\n"
    "  info        FILE    list the tensors of a checkpoint (--check ORIGINAL)\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "--help")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  octet::cli::Args args(argv + 2, argv + argc);
  try {
    if (cmd == "doctor") return octet::cli::doctor(args);
    if (cmd == "demo") return octet::cli::demo(args);
    if (cmd == "bench") return octet::cli::bench(args);
    if (cmd == "quantize") return octet::cli::quantize(args);
    if (cmd == "dequantize") return octet::cli::dequantize(args);
    if (cmd == "info") return octet::cli::info(args);
    std::fprintf(stderr, "octet: unknown command '%s'\n%s", cmd.c_str(), kUsage);
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "octet %s: error: %s\n", cmd.c_str(), e.what());
    return 1;
  }
}
