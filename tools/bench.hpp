// octet bench: a registry of per-family benchmark functions, CUDA-event timing (warm-up, then
// the median of many runs) and the device ceilings measured in the same run (device-to-device
// copy bandwidth counting read + write, first; cuBLAS f32/f16/bf16 GEMM rates when a family first
// asks for them, or at the end: a second of full-power GEMMs leaves the GPU power-capped for the
// rows right after it, which would read low).
// A family adds one file tools/bench_<family>.cpp with OCTET_BENCH("<family>", function), or
// OCTET_BENCH_HOST for a family that measures CPU work only: those also run on a machine without
// a GPU (then alone, without the device ceilings), timed on the host clock (time_host_ms).
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "octet/octet.hpp"

namespace octet::bench {

struct Ceilings {
  double copy_gbps = 0;        // cudaMemcpyAsync D2D of 1 GiB, (read + write) bytes / time
  double gemm_f32_tflops = 0;  // cuBLAS, 8192^3 (f32 without TF32)
  double gemm_f16_tflops = 0;
  double gemm_bf16_tflops = 0;
};

struct Record {
  std::string family;     // "quant"
  std::string name;       // "quantize_blockwise"
  std::string params;     // "f32 n=64M blocksize=4096"
  double median_ms = 0;
  double min_ms = 0;
  double value = 0;       // in `unit`
  std::string unit;       // "GB/s", "TFLOP/s", "us", "x"
  double ceiling = 0;     // the matching ceiling in the same unit (0 when none)
  std::string target;     // e.g. ">= 2500 GB/s" from the issue, for the reader
  std::string note;       // e.g. "bitsandbytes 0.49.2: 730 GB/s"
};

class Context {
 public:
  Device device = Device::cuda(0);
  Ceilings ceilings;
  int warmup = 5;
  int runs = 30;
  size_t l2_bytes = 0;  // the device's L2 size (set before the families run)
  std::vector<Record> records;

  // How many independent copies of a working set of `bytes` a benchmark should cycle through
  // (fn(i) uses copy i % n) so that consecutive runs together touch more than twice the L2 and
  // no run finds its inputs left in the cache by the previous one: ceil(2 * L2 / bytes), >= 1.
  int rotation(double bytes) const;

  // Runs fn(i) warmup times, then `runs` times each between two CUDA events on the current
  // stream; returns the median milliseconds (and the minimum through min_ms).
  double time_ms(const std::function<void(int)>& fn, double* min_ms = nullptr);
  // Milliseconds per call of fn(i) issued `reps` times back to back between two events (the
  // host runs ahead, so launch and allocation latency is hidden): the median of 5 such runs.
  double time_back_to_back_ms(const std::function<void(int)>& fn, int reps = 20);
  // Adds a bandwidth record: bytes moved (read + write) per run.
  Record& add_bandwidth(std::string family, std::string name, std::string params, double bytes, double median_ms,
                        double min_ms, std::string target = "", std::string note = "");
  // Adds a compute record: floating-point operations per run, against the given ceiling.
  Record& add_rate(std::string family, std::string name, std::string params, double flops, double median_ms,
                   double min_ms, double ceiling_tflops, std::string target = "", std::string note = "");
  // The cuBLAS GEMM ceiling of t (f32, f16 or bf16) in TFLOP/s; the first call measures all three.
  double gemm_tflops(DType t);
  // The median wall-clock milliseconds of `runs` calls of fn(i) after `warmup` untimed ones
  // (and the minimum through min_ms), for work on the host.
  double time_host_ms(const std::function<void(int)>& fn, int warmup, int runs, double* min_ms = nullptr);
  // Adds a plain time or ratio.
  Record& add_value(std::string family, std::string name, std::string params, double value, std::string unit,
                    double median_ms, std::string target = "", std::string note = "");
};

using BenchFn = void (*)(Context&);
struct Registrar {
  Registrar(const char* family, BenchFn fn, bool host_only = false);
};
#define OCTET_BENCH(family, fn) static const ::octet::bench::Registrar octet_bench_registrar_##fn(family, fn);
#define OCTET_BENCH_HOST(family, fn) \
  static const ::octet::bench::Registrar octet_bench_registrar_##fn(family, fn, true);

}  // namespace octet::bench
