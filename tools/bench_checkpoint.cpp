// Benchmarks of the checkpoint tools on the CPU (a host family: runs without a GPU too): `octet
// quantize` and `octet dequantize` end to end (read, convert, write, rename; the page cache warm
// after one untimed run) of a generated 1 GiB bf16 checkpoint of 8 weight matrices 4096 x 16384
// with their 1-dimensional biases and norms, --device cpu, default options. The rate counts the
// input checkpoint's tensor bytes per second of wall clock. The files live in the system's
// temporary folder and are removed afterwards.
#include <algorithm>
#include <filesystem>
#include <thread>
#include <unistd.h>

#include "tools/bench.hpp"
#include "tools/checkpoint.hpp"

namespace octet::bench {
namespace {

namespace fs = std::filesystem;

// The temporary folder of the run; removed with everything in it.
struct Scratch {
  fs::path dir = fs::temp_directory_path() / ("octet_bench_checkpoint_" + std::to_string(::getpid()));
  Scratch() { fs::create_directories(dir); }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

void write_checkpoint(const std::string& path) {
  manual_seed(1);
  const int64_t rows = 4096, cols = 16384;
  const Tensor weight = randn({rows, cols}, DType::bf16);  // the same values in every layer
  const Tensor bias = randn({rows}, DType::bf16), norm = randn({cols}, DType::bf16);
  SafetensorsWriter w(path);
  for (int layer = 0; layer < 8; ++layer) {
    const std::string prefix = cat("layers.", layer, ".");
    w.add(prefix + "weight", weight);
    w.add(prefix + "bias", bias);
    w.add(prefix + "norm", norm);
  }
  w.close();
}

void bench_checkpoint(Context& ctx) {
  const Scratch scratch;
  const std::string in = (scratch.dir / "model.safetensors").string(), q = (scratch.dir / "q.safetensors").string(),
                    back = (scratch.dir / "back.safetensors").string();
  write_checkpoint(in);
  const int runs = std::min(ctx.runs, 5);
  const std::string params = cat("bf16 1 GiB (8 x 4096x16384 + 16 vectors), cpu, ", std::thread::hardware_concurrency(),
                                 " threads");
  cli::Converted q_bytes, d_bytes;
  double mn = 0;
  double ms = ctx.time_host_ms([&](int) { q_bytes = cli::quantize_checkpoint({in, q, "--device", "cpu", "--force"}); },
                               1, runs, &mn);
  Record& rq = ctx.add_value("checkpoint", "octet quantize", params, double(q_bytes.in_bytes) / (ms * 1e-3) / 1e9,
                             "GB/s", ms, ">= 1 GB/s on 2 cores", "end to end: read, quantize, write");
  rq.min_ms = mn;
  ms = ctx.time_host_ms([&](int) { d_bytes = cli::dequantize_checkpoint({q, back, "--device", "cpu", "--force"}); }, 1,
                        runs, &mn);
  Record& rd = ctx.add_value("checkpoint", "octet dequantize", params, double(d_bytes.out_bytes) / (ms * 1e-3) / 1e9,
                             "GB/s", ms, "", "end to end; rate in restored bytes");
  rd.min_ms = mn;
}

}  // namespace

OCTET_BENCH_HOST("checkpoint", bench_checkpoint)

}  // namespace octet::bench
