// octet bench: measures the ceilings, runs the registered family benchmarks (all, or those
// named on the command line), prints a table and writes JSON (--json FILE). The JSON names where
// its figures come from: device, NVIDIA driver, CUDA versions, octet version and commit, UTC date;
// tools/plot-bench renders it for docs/performance.md.
// Without a GPU only the host families run (and no ceilings are measured).
#include "tools/bench.hpp"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "octet_build_config.h"
#include "octet_commit.h"
#include "tools/args.hpp"
#include "tools/commands.hpp"

namespace octet::bench {
namespace {

struct Family {
  std::string name;
  BenchFn fn;
  bool host_only;
};

std::vector<Family>& registry() {
  static std::vector<Family> r;
  return r;
}

// "Intel(R) Xeon(R) ... (2 threads)" from /proc/cpuinfo, or "host CPU".
std::string cpu_name() {
  std::ifstream f("/proc/cpuinfo");
  std::string line, name = "host CPU";
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0 && line.find(':') != std::string::npos) {
      name = line.substr(line.find(':') + 2);
      break;
    }
  return cat(name, " (", std::thread::hardware_concurrency(), " threads)");
}

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(cat("bench: ", what, ": ", cudaGetErrorString(e)));
}

void measure_copy_ceiling(Context& ctx) {
  const size_t bytes = size_t(1) << 30;
  Tensor a = Tensor::empty({int64_t(bytes)}, DType::u8, ctx.device);
  Tensor b = Tensor::empty({int64_t(bytes)}, DType::u8, ctx.device);
  cudaStream_t s = current_stream(ctx.device.index);
  double mn = 0;
  const double ms = ctx.time_ms([&](int) { check(cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice, s), "copy"); }, &mn);
  ctx.ceilings.copy_gbps = 2.0 * bytes / (ms * 1e-3) / 1e9;
  ctx.add_bandwidth("ceiling", "device copy", "1 GiB D2D", 2.0 * bytes, ms, mn);
}

void measure_gemm_ceilings(Context& ctx) {
  const int64_t n = 8192;
  for (DType t : {DType::f32, DType::f16, DType::bf16}) {
    Tensor x = randn({n, n}, t, ctx.device), y = randn({n, n}, t, ctx.device);
    double gmin = 0;
    const double gms = ctx.time_ms([&](int) { (void)matmul(x, y); }, &gmin);
    const double tflops = 2.0 * n * n * n / (gms * 1e-3) / 1e12;
    (t == DType::f32 ? ctx.ceilings.gemm_f32_tflops : t == DType::f16 ? ctx.ceilings.gemm_f16_tflops : ctx.ceilings.gemm_bf16_tflops) = tflops;
    ctx.add_rate("ceiling", "cuBLAS GEMM", cat(dtype_name(t), " 8192^3"), 2.0 * n * n * n, gms, gmin, 0);
  }
}

}  // namespace

Registrar::Registrar(const char* family, BenchFn fn, bool host_only) {
  registry().push_back({family, fn, host_only});
}

namespace {

// Sorted times of `count` timed runs of body(r) between two events on stream s (after `warmup`
// untimed calls of body), each divided by `per`.
std::vector<float> timed_runs(cudaStream_t s, int warmup, int count, float per, const std::function<void(int)>& body) {
  for (int i = 0; i < warmup; ++i) body(i);
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "event");
  check(cudaEventCreate(&stop), "event");
  std::vector<float> times;
  for (int r = 0; r < count; ++r) {
    check(cudaEventRecord(start, s), "record");
    body(r);
    check(cudaEventRecord(stop, s), "record");
    check(cudaEventSynchronize(stop), "sync");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, start, stop), "elapsed");
    times.push_back(ms / per);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(times.begin(), times.end());
  return times;
}

}  // namespace

double Context::gemm_tflops(DType t) {
  if (ceilings.gemm_f16_tflops == 0) measure_gemm_ceilings(*this);
  if (t == DType::f32) return ceilings.gemm_f32_tflops;
  return t == DType::f16 ? ceilings.gemm_f16_tflops : ceilings.gemm_bf16_tflops;
}

double Context::time_ms(const std::function<void(int)>& fn, double* min_ms) {
  const std::vector<float> times = timed_runs(current_stream(device.index), warmup, runs, 1.0f, fn);
  if (min_ms) *min_ms = times.front();
  return times[times.size() / 2];
}

double Context::time_host_ms(const std::function<void(int)>& fn, int warmup, int runs, double* min_ms) {
  for (int i = 0; i < warmup; ++i) fn(i);
  std::vector<double> times;
  for (int r = 0; r < runs; ++r) {
    const auto start = std::chrono::steady_clock::now();
    fn(r);
    times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  if (min_ms) *min_ms = times.front();
  return times[times.size() / 2];
}

double Context::time_back_to_back_ms(const std::function<void(int)>& fn, int reps) {
  const std::vector<float> times =
      timed_runs(current_stream(device.index), 1, 5, static_cast<float>(reps), [&](int r) {
        for (int i = 0; i < reps; ++i) fn(r * reps + i);
      });
  return times[times.size() / 2];
}

int Context::rotation(double bytes) const {
  if (bytes <= 0) return 1;
  const double n = std::ceil(2.0 * static_cast<double>(l2_bytes) / bytes);
  return static_cast<int>(std::clamp(n, 1.0, 1024.0));
}

Record& Context::add_bandwidth(std::string family, std::string name, std::string params, double bytes, double median_ms,
                               double min_ms, std::string target, std::string note) {
  Record r{std::move(family), std::move(name), std::move(params), median_ms, min_ms,
           bytes / (median_ms * 1e-3) / 1e9, "GB/s", ceilings.copy_gbps, std::move(target), std::move(note)};
  records.push_back(std::move(r));
  return records.back();
}

Record& Context::add_rate(std::string family, std::string name, std::string params, double flops, double median_ms,
                          double min_ms, double ceiling_tflops, std::string target, std::string note) {
  Record r{std::move(family), std::move(name), std::move(params), median_ms, min_ms,
           flops / (median_ms * 1e-3) / 1e12, "TFLOP/s", ceiling_tflops, std::move(target), std::move(note)};
  records.push_back(std::move(r));
  return records.back();
}

Record& Context::add_value(std::string family, std::string name, std::string params, double value, std::string unit,
                           double median_ms, std::string target, std::string note) {
  Record r{std::move(family), std::move(name), std::move(params), median_ms, median_ms, value, std::move(unit), 0,
           std::move(target), std::move(note)};
  records.push_back(std::move(r));
  return records.back();
}

namespace {

// The NVIDIA driver's version ("580.95.05"), from the kernel module's own line; "unknown" elsewhere.
std::string nvidia_driver_version() {
  std::ifstream in("/proc/driver/nvidia/version");
  std::string line;
  if (!std::getline(in, line)) return "unknown";
  const std::string marker = "Kernel Module";
  size_t at = line.find(marker);
  if (at == std::string::npos) return "unknown";
  at = line.find_first_not_of(" \t", at + marker.size());
  if (at == std::string::npos) return "unknown";
  return line.substr(at, line.find_first_of(" \t", at) - at);
}

std::string cuda_version(int v) { return v > 0 ? cat(v / 1000, ".", (v % 1000) / 10) : std::string("none"); }

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// Where the figures of this run come from (the JSON's top-level keys besides the records).
// p is null without a GPU: the figures are then the host's (device_name is the CPU's model).
nlohmann::json provenance(const cudaDeviceProp* p, const std::string& device_name) {
  int runtime = 0, driver = 0;
  cudaRuntimeGetVersion(&runtime);
  if (cudaDriverGetVersion(&driver) != cudaSuccess) driver = 0;
  return {{"device", device_name},
          {"compute_capability", p ? cat(p->major, ".", p->minor) : std::string("none")},
          {"driver", nvidia_driver_version()},
          {"cuda_driver_api", cuda_version(driver)},
          {"cuda_runtime", cuda_version(runtime)},
          {"octet_version", OCTET_VERSION},
          {"commit", OCTET_COMMIT},
          {"gpu_archs", OCTET_GPU_ARCHS},
          {"date", utc_now()}};
}

}  // namespace
}  // namespace octet::bench

namespace octet::cli {

namespace {
const char* kBenchUsage =
    "usage: octet bench [FAMILY ...] [--json FILE] [--runs N]\n"
    "  Times the registered kernel families (all, or those named) against the ceilings measured in\n"
    "  the same run; median of N runs (default 30) after 5 warm-up runs.\n";
}  // namespace

int run_bench(const Args& args) {
  const ArgParser parser(args, {}, {"--json", "--runs"});
  const std::string json_path = parser.get("--json");
  const std::vector<std::string>& families = parser.positional();
  bench::Context ctx;
  ctx.runs = static_cast<int>(parser.integer("--runs", ctx.runs, 1, 100000));
  for (const auto& f : families)
    if (std::none_of(bench::registry().begin(), bench::registry().end(), [&](const auto& r) { return r.name == f; }))
      throw UsageError(cat("no benchmark family '", f, "'"));
  const bool gpu = cuda_available();
  auto wanted = [&](const std::string& f) {
    return families.empty() || std::find(families.begin(), families.end(), f) != families.end();
  };
  if (!gpu) {
    std::vector<std::string> skipped;
    for (const auto& f : bench::registry())
      if (!f.host_only && wanted(f.name)) skipped.push_back(f.name);
    if (!skipped.empty()) {
      std::string names;
      for (const auto& n : skipped) names += (names.empty() ? "" : ", ") + n;
      std::printf("octet bench: no CUDA device; skipping the GPU families (%s)\n", names.c_str());
    }
  }
  std::string device_name = bench::cpu_name();
  cudaDeviceProp prop{};
  if (gpu) {
    if (cudaGetDeviceProperties(&prop, ctx.device.index) == cudaSuccess) {
      ctx.l2_bytes = static_cast<size_t>(prop.l2CacheSize);
      device_name = prop.name;
    }
    bench::measure_copy_ceiling(ctx);
  }
  for (const auto& f : bench::registry())
    if (wanted(f.name) && (gpu || f.host_only)) f.fn(ctx);
  if (gpu) (void)ctx.gemm_tflops(DType::f16);  // the GEMM ceilings are always reported
  if (ctx.records.empty()) return 0;
  const nlohmann::json source = bench::provenance(gpu ? &prop : nullptr, device_name);
  std::printf("octet bench: %s (compute capability %s), driver %s, CUDA %s, octet %s commit %s, %s\n",
              device_name.c_str(), source["compute_capability"].get<std::string>().c_str(),
              source["driver"].get<std::string>().c_str(), source["cuda_runtime"].get<std::string>().c_str(),
              OCTET_VERSION, OCTET_COMMIT, source["date"].get<std::string>().c_str());
  std::printf("%-9s %-34s %-36s %10s %12s %8s  %s\n", "family", "op", "params", "median ms", "value", "% ceil", "target / note");
  for (const auto& r : ctx.records) {
    const double pct = r.ceiling > 0 ? 100.0 * r.value / r.ceiling : 0.0;
    std::printf("%-9s %-34s %-36s %10.4f %8.1f %-7s %6.1f%%  %s%s%s\n", r.family.c_str(), r.name.c_str(), r.params.c_str(),
                r.median_ms, r.value, r.unit.c_str(), pct, r.target.c_str(), r.note.empty() ? "" : "; ", r.note.c_str());
  }
  if (!json_path.empty()) {
    nlohmann::json j = source;
    j["host"] = bench::cpu_name();
    j["ceilings"] = {{"copy_gbps", ctx.ceilings.copy_gbps}, {"gemm_f32_tflops", ctx.ceilings.gemm_f32_tflops},
                     {"gemm_f16_tflops", ctx.ceilings.gemm_f16_tflops}, {"gemm_bf16_tflops", ctx.ceilings.gemm_bf16_tflops}};
    j["runs"] = ctx.runs;
    j["l2_bytes"] = ctx.l2_bytes;
    for (const auto& r : ctx.records)
      j["records"].push_back({{"family", r.family}, {"name", r.name}, {"params", r.params}, {"median_ms", r.median_ms},
                              {"min_ms", r.min_ms}, {"value", r.value}, {"unit", r.unit}, {"ceiling", r.ceiling},
                              {"percent_of_ceiling", r.ceiling > 0 ? 100.0 * r.value / r.ceiling : 0.0},
                              {"target", r.target}, {"note", r.note}});
    std::ofstream(json_path) << j.dump(2) << "\n";
  }
  return 0;
}

int bench(const Args& args) { return with_usage("bench", kBenchUsage, [&] { return run_bench(args); }); }

}  // namespace octet::cli
