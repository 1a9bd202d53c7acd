// Helpers of the octet program's tests (tests/test_cli.cpp, tests/test_cli_checkpoints.cpp):
// running $OCTET_BIN (set by meson) and capturing its output and exit status, temporary paths
// unique to the process, a sample checkpoint and the library's round trip to compare with.
#pragma once
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "tests/helpers.hpp"

namespace octet::cli_test {

struct Run {
  int code = -1;
  std::string out;  // stdout and stderr together
};

inline std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("octet_cli_" + std::to_string(::getpid()) + "_" + name)).string();
}

inline Run octet_run(const std::string& args) {
  const char* bin = std::getenv("OCTET_BIN");
  REQUIRE_MESSAGE(bin != nullptr, "OCTET_BIN is not set (meson test sets it to the octet program)");
  Run r;
  FILE* f = ::popen((std::string(bin) + " " + args + " 2>&1 </dev/null").c_str(), "r");
  REQUIRE(f != nullptr);
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) r.out.append(buf, n);
  const int status = ::pclose(f);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// A checkpoint with odd sizes, partial blocks, an empty tensor and tensors that must be copied.
inline TensorMap sample_checkpoint() {
  manual_seed(1234);
  TensorMap m;
  m["layer.w"] = randn({37, 129});
  m["layer.b"] = randn({300}, DType::f16);
  m["emb"] = randn({3, 70}, DType::bf16);
  m["empty"] = Tensor::empty({0, 3}, DType::bf16);
  m["double"] = randn({50}, DType::f64);
  m["skip.w"] = randn({40});
  m["steps"] = Tensor::full({5}, 7.0, DType::i64);
  m["fp8"] = randn({9}).to(DType::f8_e4m3);
  return m;
}

inline bool quantizable(DType t) { return t == DType::f32 || t == DType::f16 || t == DType::bf16 || t == DType::f64; }

// What the library gives for tensor a with these options (the reference for octet dequantize).
inline Tensor library_roundtrip(const Tensor& a, const Code& code, int64_t blocksize, bool nested) {
  const Tensor x = a.dtype() == DType::f64 ? a.to(DType::f32) : a;
  const Quantized q = blocksize ? quantize_blockwise(x, code, blocksize, nested) : quantize(x, code);
  const Tensor y = blocksize ? dequantize_blockwise(q.codes, q.state) : dequantize(q.codes, q.state);
  return a.dtype() == DType::f64 ? y.to(DType::f64) : y;
}


}  // namespace octet::cli_test
