// octet quantize / dequantize / info: 8-bit quantized safetensors checkpoints (docs/checkpoints.md).
// The stored layout is in checkpoint_format.hpp, paths and sharded checkpoints in
// checkpoint_files.hpp, streaming reads and writes in checkpoint_io.hpp. Files are processed one
// tensor at a time: blockwise (not nested) and copied tensors in chunks, global and nested ones
// and info --check whole, so peak memory stays a few chunks, or a few times the largest tensor
// that is converted whole. Problems are octet::Error naming the file and tensor (exit 1), bad
// command lines are UsageError (exit 2).
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <regex>

#include "octet/octet.hpp"
#include "tools/args.hpp"
#include "tools/checkpoint.hpp"
#include "tools/checkpoint_files.hpp"
#include "tools/checkpoint_format.hpp"
#include "tools/checkpoint_io.hpp"

namespace octet::cli {
namespace {

const char* kQuantizeUsage =
    "usage: octet quantize IN OUT [--blocksize N | --global] [--code dynamic|fp8-e4m3|fp8-e5m2|linear]\n"
    "                      [--nested] [--min-size N | --all] [--skip REGEX] [--force] [--device cpu|cuda]\n"
    "  Quantizes the f32/f16/bf16/f64 tensors of IN with at least 2 dimensions and N elements (default\n"
    "  4096; --all: every floating-point tensor) whose name does not match REGEX to 8-bit codes\n"
    "  (blockwise, blocksize a power of two in [32, 4096], default 4096; --global: one absmax per tensor).\n"
    "  IN is a .safetensors file, or a folder (or its index file) with model.safetensors.index.json:\n"
    "  then OUT is a folder that receives the converted shards and a rewritten index.\n"
    "  OUT must not be IN; an existing OUT is replaced only with --force.\n";
const char* kDequantizeUsage =
    "usage: octet dequantize IN OUT [--force] [--device cpu|cuda]\n"
    "  Restores the floats of a quantized checkpoint (a file, or a sharded folder into a folder).\n";
const char* kInfoUsage = "usage: octet info FILE [--check ORIGINAL] [--device cpu|cuda]\n";

Code code_named(const std::string& name) {
  if (name == "dynamic") return Code::dynamic();
  if (name == "fp8-e4m3") return Code::fp8_e4m3();
  if (name == "fp8-e5m2") return Code::fp8_e5m2();
  if (name == "linear") return Code::linear();
  throw UsageError(cat("--code expects dynamic, fp8-e4m3, fp8-e5m2 or linear, got '", name, "'"));
}

// "[#####.....] 12/40 name" on stderr, only when stderr is a terminal.
class Progress {
 public:
  explicit Progress(size_t total) : total_(total), on_(::isatty(STDERR_FILENO) == 1) {}
  ~Progress() { if (on_ && done_) std::fprintf(stderr, "\r\033[K"); }
  void step(const std::string& name) {
    ++done_;
    if (!on_) return;
    const size_t w = 30, filled = total_ ? w * done_ / total_ : w;
    std::fprintf(stderr, "\r\033[K[%s%s] %zu/%zu %.60s", std::string(filled, '#').c_str(),
                 std::string(w - filled, '.').c_str(), done_, total_, name.c_str());
    std::fflush(stderr);
  }

 private:
  size_t total_, done_ = 0;
  bool on_;
};

std::string mb(double bytes) { return cat(std::round(bytes / 1e4) / 100, " MB"); }

// What a conversion wrote: the tensors per output file (for a sharded index) and the byte counts.
struct Written {
  std::map<std::string, std::string> weight_map;  // output tensor -> its file's name
  uint64_t in_bytes = 0, out_bytes = 0;            // tensor data read and written
  size_t tensors = 0, converted = 0;
  std::map<std::string, size_t> copied;  // why -> how many tensors were copied unchanged

  void add(PlannedWriter& w, const std::string& file, const std::string& name, const Tensor& t) {
    w.add(name, t);
    weight_map[name] = file;
    out_bytes += t.nbytes();
  }
  void add_part(PlannedWriter& w, const std::string& file, const std::string& name, const Tensor& t) {
    w.add_part(name, t);
    weight_map[name] = file;
    out_bytes += t.nbytes();
  }
};

// Elements per chunk of a streamed tensor: a multiple of every blocksize, and small enough that
// a chunk, its codes and the next chunk stay in the processor's caches.
constexpr int64_t kChunk = int64_t{1} << 21;

// Copies tensor e unchanged from `input` to `w`, a chunk at a time.
void copy_tensor(const ChunkReader& input, const SafetensorsEntry& e, PlannedWriter& w, const std::string& file,
                 Written& out) {
  if (shape_numel(e.shape) == 0) return out.add(w, file, e.name, input.whole(e));
  input.for_each_chunk(e, kChunk, [&](const Tensor& part, int64_t) { out.add_part(w, file, e.name, part); });
}

std::string file_name(const std::string& path) { return std::filesystem::path(path).filename().string(); }

std::vector<std::string> names_of(const SafetensorsIndex& index) {
  std::vector<std::string> names;
  for (const auto& e : index.entries) names.push_back(e.name);
  return names;
}

struct QuantizeOptions {
  int64_t blocksize = 4096;  // 0: global
  Code code;
  std::string code_name;
  bool nested = false;
  bool all = false;
  int64_t min_size = 4096;
  bool has_skip = false;
  std::regex skip;
  Device device;

  // Why tensor e is copied unchanged; nullptr when it is quantized.
  const char* copied_because(const SafetensorsEntry& e) const {
    if (!quantizable(e.dtype)) return "not floating point";
    if (has_skip && std::regex_search(e.name, skip)) return "matched --skip";
    if (!all && (e.shape.size() < 2 || shape_numel(e.shape) < min_size))
      return min_size == 4096 ? "below 2 dimensions or 4096 elements" : "below 2 dimensions or --min-size";
    return nullptr;
  }
};

void quantize_file(const char* op, const Checkpoint& c, const FileJob& job, const QuantizeOptions& o, Written& out) {
  const SafetensorsIndex index = read_safetensors_index(job.in);
  check_shard(op, c, job.in, names_of(index));
  for (const auto& [key, value] : index.metadata)
    if (key.rfind(kQuantPrefix, 0) == 0)
      fail(op, cat("file '", job.in, "' already holds quantized tensors (metadata ", key, "); dequantize it first"));
  const QuantInfo info{o.blocksize, DType::f32, o.nested, o.code_name};
  std::set<std::string> names;  // every name of the output, to catch collisions before writing
  std::map<std::string, std::string> owner;
  for (const auto& e : index.entries) names.insert(e.name);
  for (const auto& e : index.entries) {
    if (o.copied_because(e)) continue;
    for (const auto& s : info.state_names(e.name))
      if (!names.insert(s).second)
        fail(op, cat("file '", job.in, "': tensor '", e.name, "': its state tensor '", s, "' would collide with ",
                     owner.count(s) ? cat("a state tensor of '", owner[s], "'") : std::string("a tensor of the input"),
                     " (rename it or use --skip)"));
      else owner[s] = e.name;
  }

  std::vector<SafetensorsEntry> plan;
  Metadata metadata = index.metadata;
  for (const auto& e : index.entries) {
    if (o.copied_because(e)) {
      plan.push_back(e);
      continue;
    }
    const auto parts = stored_layout(e.name, e.shape, o.blocksize, o.nested);
    plan.insert(plan.end(), parts.begin(), parts.end());
    QuantInfo qi = info;
    qi.dtype = e.dtype;
    metadata[kQuantPrefix + e.name] = qi.to_json();
  }
  PlannedWriter w(job.out, plan, metadata);
  const std::string file = file_name(job.out);
  Progress progress(index.entries.size());
  const ChunkReader input(job.in, index);
  for (const SafetensorsEntry& e : index.entries) {
    out.in_bytes += e.end - e.begin;
    ++out.tensors;
    if (const char* why = o.copied_because(e)) {
      copy_tensor(input, e, w, file, out);
      ++out.copied[why];
      progress.step(e.name);
      continue;
    }
    const int64_t n = shape_numel(e.shape);
    auto as_input = [&](const Tensor& t) { return (t.dtype() == DType::f64 ? t.to(DType::f32) : t).to(o.device); };
    if (o.blocksize && !o.nested && n > 0) {
      // Blocks are independent: chunk by chunk gives the codes and absmax of the whole tensor.
      Tensor absmax = Tensor::empty({(n + o.blocksize - 1) / o.blocksize}, DType::f32, Device::cpu());
      input.for_each_chunk(e, kChunk, [&](const Tensor& part, int64_t first) {
        const Quantized q = quantize_blockwise(as_input(part), o.code, o.blocksize);
        out.add_part(w, file, e.name, q.codes);
        const Tensor m = q.state.absmax.to(Device::cpu());
        std::memcpy(absmax.data_ptr<float>() + first / o.blocksize, m.data(), m.nbytes());
      });
      out.add(w, file, e.name + ".absmax", absmax);
      out.add(w, file, e.name + ".code", o.code.table(Device::cpu()));
    } else {  // global and nested need the whole tensor
      const Tensor a = as_input(input.whole(e));
      const Quantized q = o.blocksize ? quantize_blockwise(a, o.code, o.blocksize, o.nested) : quantize(a, o.code);
      for (const auto& [name, x] : stored_tensors(e.name, q)) out.add(w, file, name, x);
    }
    ++out.converted;
    progress.step(e.name);
  }
  w.close();
}

void dequantize_file(const char* op, const Checkpoint& c, const FileJob& job, Device dev, Written& out) {
  const SafetensorsIndex index = read_safetensors_index(job.in);
  check_shard(op, c, job.in, names_of(index));
  const auto [quantized, state] = quantized_of(op, job.in, index);
  std::vector<SafetensorsEntry> plan;
  for (const auto& e : index.entries) {
    if (state.count(e.name)) continue;
    const auto it = quantized.find(e.name);
    plan.push_back({e.name, it != quantized.end() ? it->second.dtype : e.dtype, e.shape});
  }
  Metadata metadata;
  for (const auto& [key, value] : index.metadata)
    if (key.rfind(kQuantPrefix, 0) != 0) metadata[key] = value;
  PlannedWriter w(job.out, plan, metadata);
  const std::string file = file_name(job.out);
  Progress progress(index.entries.size() - state.size());
  const ChunkReader input(job.in, index);
  for (const auto& e : index.entries) {
    if (state.count(e.name)) continue;
    out.in_bytes += e.end - e.begin;
    ++out.tensors;
    progress.step(e.name);
    const auto it = quantized.find(e.name);
    if (it == quantized.end()) {
      copy_tensor(input, e, w, file, out);
      ++out.copied["not quantized"];
      continue;
    }
    ++out.converted;
    const QuantInfo& q = it->second;
    const int64_t n = shape_numel(e.shape), blocks = q.blocksize ? (n + q.blocksize - 1) / q.blocksize : 1;
    const Tensor absmax = q.nested || n == 0 ? Tensor() : input.whole(*index.find(e.name + ".absmax"));
    const Tensor code = q.nested || n == 0 ? Tensor() : input.whole(*index.find(e.name + ".code"));
    // Plain blockwise tensors in chunks; the rest (and any state that does not fit, so that
    // dequantize_blockwise reports it) whole.
    if (q.blocksize == 0 || !absmax.defined() || absmax.dtype() != DType::f32 || absmax.shape() != Shape{blocks} ||
        code.dtype() != DType::f32 || code.shape() != Shape{256}) {
      out.add(w, file, e.name, restore(op, job.in, index, e.name, q, dev));
      continue;
    }
    const Tensor table = code.to(dev);
    input.for_each_chunk(e, kChunk, [&](const Tensor& part, int64_t first) {
      const int64_t count = (part.numel() + q.blocksize - 1) / q.blocksize;
      QuantState st;
      st.absmax = Tensor::from_host(absmax.data_ptr<float>() + first / q.blocksize, static_cast<size_t>(count),
                                    DType::f32, Shape{count}, dev);
      st.code = table;
      st.blocksize = q.blocksize;
      st.dtype = q.dtype == DType::f64 ? DType::f32 : q.dtype;
      st.shape = part.shape();
      const Tensor x = dequantize_blockwise(part.to(dev), st);
      out.add_part(w, file, e.name, q.dtype == DType::f64 ? x.to(DType::f64) : x);
    });
  }
  w.close();
}

// "; copied 3 unchanged (2 not floating point, 1 matched --skip)" or "".
std::string copied_summary(const Written& w) {
  size_t n = 0;
  std::string why;
  for (const auto& [reason, count] : w.copied) {
    n += count;
    why += cat(why.empty() ? "" : ", ", count, " ", reason);
  }
  return n ? cat("; copied ", n, " unchanged (", why, ")") : std::string();
}

std::string target_of(const Checkpoint& c, const std::string& out) {
  return c.sharded ? cat(out, " (", c.files.size(), " shard", c.files.size() == 1 ? "" : "s", ")") : out;
}

// The parsed command line of octet quantize.
struct QuantizeCommand {
  QuantizeOptions options;
  std::string in, out;
  bool force = false;
};

QuantizeCommand parse_quantize(const Args& args) {
  ArgParser p(args, {"--global", "--nested", "--all", "--force"},
              {"--blocksize", "--code", "--device", "--skip", "--min-size"});
  if (p.positional().size() != 2) throw UsageError("expects IN and OUT");
  if (p.has("--global") && p.has("--blocksize")) throw UsageError("--global and --blocksize exclude each other");
  if (p.has("--global") && p.has("--nested")) throw UsageError("--nested needs blockwise quantization (not --global)");
  if (p.has("--all") && p.has("--min-size")) throw UsageError("--all and --min-size exclude each other");
  QuantizeCommand c;
  QuantizeOptions& o = c.options;
  o.blocksize = p.has("--global") ? 0 : p.integer("--blocksize", 4096, 32, 4096);
  if (o.blocksize & (o.blocksize - 1)) throw UsageError(cat("--blocksize must be a power of two, got ", o.blocksize));
  o.code_name = p.get("--code", "dynamic");
  o.code = code_named(o.code_name);
  o.nested = p.has("--nested");
  o.all = p.has("--all");
  o.min_size = p.integer("--min-size", 4096, 0, int64_t{1} << 48);
  o.has_skip = p.has("--skip");
  try {
    if (o.has_skip) o.skip = std::regex(p.get("--skip"), std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    throw UsageError(cat("--skip: invalid regular expression '", p.get("--skip"), "' (", e.what(), ")"));
  }
  o.device = p.device();
  c.in = p.positional()[0];
  c.out = p.positional()[1];
  c.force = p.has("--force");
  return c;
}

// Plans and runs a conversion: file_fn(op, checkpoint, job, written) for every file, then the index.
template <class FileFn>
Written convert(const char* op, const std::string& in, const std::string& out, bool force, Checkpoint* plan,
                FileFn file_fn) {
  *plan = plan_conversion(op, in, out, force);
  Written w;
  for (const FileJob& job : plan->files) file_fn(op, *plan, job, w);
  if (plan->sharded) write_index(op, *plan, w.weight_map, w.out_bytes);
  return w;
}

Written run_quantize_files(const QuantizeCommand& c, Checkpoint* plan) {
  return convert("octet quantize", c.in, c.out, c.force, plan,
                 [&](const char* op, const Checkpoint& cp, const FileJob& job, Written& out) {
                   quantize_file(op, cp, job, c.options, out);
                 });
}

int run_quantize(const Args& args) {
  const QuantizeCommand c = parse_quantize(args);
  const QuantizeOptions& o = c.options;
  Checkpoint plan;
  const Written w = run_quantize_files(c, &plan);
  const double before = static_cast<double>(w.in_bytes), after = static_cast<double>(w.out_bytes);
  std::printf("%s: quantized %zu of %zu tensors (%s, code %s%s) on %s: %s -> %s (%.2fx)%s\n",
              target_of(plan, c.out).c_str(), w.converted, w.tensors,
              o.blocksize ? cat("blocksize ", o.blocksize).c_str() : "global", o.code_name.c_str(),
              o.nested ? ", nested absmax" : "", o.device.str().c_str(), mb(before).c_str(), mb(after).c_str(),
              after > 0 ? before / after : 1.0, copied_summary(w).c_str());
  return 0;
}

struct DequantizeCommand {
  Device device;
  std::string in, out;
  bool force = false;
};

DequantizeCommand parse_dequantize(const Args& args) {
  ArgParser p(args, {"--force"}, {"--device"});
  if (p.positional().size() != 2) throw UsageError("expects IN and OUT");
  return {p.device(), p.positional()[0], p.positional()[1], p.has("--force")};
}

Written run_dequantize_files(const DequantizeCommand& c, Checkpoint* plan) {
  return convert("octet dequantize", c.in, c.out, c.force, plan,
                 [&](const char* op, const Checkpoint& cp, const FileJob& job, Written& out) {
                   dequantize_file(op, cp, job, c.device, out);
                 });
}

int run_dequantize(const Args& args) {
  const DequantizeCommand c = parse_dequantize(args);
  Checkpoint plan;
  const Written w = run_dequantize_files(c, &plan);
  std::printf("%s: restored %zu quantized tensors, copied %zu\n", target_of(plan, c.out).c_str(), w.converted,
              w.tensors - w.converted);
  return 0;
}

struct ErrorStats {
  double mean_abs = 0, max_abs = 0, snr_db = 0;
};

// Error of `got` against `want` in f64 on the host; SNR = 10 log10(sum want^2 / sum (got - want)^2).
// Reads both in chunks of 2^20 elements, so the extra memory stays small next to the tensors.
ErrorStats compare(const Tensor& got_any, const Tensor& want_any) {
  const Tensor got = got_any.to(Device::cpu()), want = want_any.to(Device::cpu());
  const int64_t n = got.numel(), chunk = int64_t{1} << 20;
  auto part = [](const Tensor& t, int64_t lo, int64_t len) {
    const auto* bytes = static_cast<const char*>(t.data()) + static_cast<size_t>(lo) * dtype_size(t.dtype());
    return Tensor::from_host(bytes, static_cast<size_t>(len), t.dtype(), Shape{len}, Device::cpu()).to_vector<double>();
  };
  double sum_abs = 0, signal = 0, noise = 0, mx = 0;
  for (int64_t lo = 0; lo < n; lo += chunk) {
    const int64_t len = std::min(chunk, n - lo);
    const std::vector<double> g = part(got, lo, len), r = part(want, lo, len);
    for (size_t i = 0; i < g.size(); ++i) {
      const double d = g[i] - r[i];
      sum_abs += std::fabs(d);
      mx = std::fmax(mx, std::fabs(d));
      signal += r[i] * r[i];
      noise += d * d;
    }
  }
  ErrorStats s;
  s.mean_abs = n == 0 ? 0 : sum_abs / static_cast<double>(n);
  s.max_abs = mx;
  s.snr_db = noise == 0 ? INFINITY : 10 * std::log10(signal / noise);
  return s;
}

int run_info(const Args& args) {
  ArgParser p(args, {}, {"--check", "--device"});
  if (p.positional().size() != 1) throw UsageError("expects one FILE");
  const Device dev = p.device();
  const std::string& path = p.positional()[0];
  const char* op = "octet info";
  const SafetensorsIndex index = read_safetensors_index(path);
  const auto [quantized, state] = quantized_of(op, path, index);
  const bool check = p.has("--check");
  const std::string original = p.get("--check");
  SafetensorsIndex orig;
  if (check) orig = read_safetensors_index(original);

  size_t width = 4;
  for (const auto& e : index.entries) width = std::max(width, std::min<size_t>(e.name.size(), 60));
  std::printf("%s: %zu tensors, %zu quantized, %zu metadata entries\n", path.c_str(),
              index.entries.size() - state.size(), quantized.size(), index.metadata.size() - quantized.size());
  std::printf("%-*s %-10s %-18s %12s %9s %-9s %6s", int(width), "name", "dtype", "shape", "bytes", "blocksize", "code", "ratio");
  if (check) std::printf(" %11s %11s %9s", "mean |err|", "max |err|", "SNR dB");
  std::printf("\n");
  double total = 0, total_orig = 0;
  for (const auto& e : index.entries) {
    if (state.count(e.name)) continue;
    const auto it = quantized.find(e.name);
    const bool q = it != quantized.end();
    double bytes = static_cast<double>(e.end - e.begin);
    if (q)
      for (const auto& s : it->second.state_names(e.name)) bytes += static_cast<double>(index.find(s)->end - index.find(s)->begin);
    const DType dtype = q ? it->second.dtype : e.dtype;
    const double orig_bytes = static_cast<double>(shape_numel(e.shape)) * static_cast<double>(dtype_size(dtype));
    total += bytes;
    total_orig += orig_bytes;
    std::printf("%-*.*s %-10s %-18s %12.0f %9s %-9s %6s", int(width), int(width), e.name.c_str(),
                q ? cat("u8<", dtype_name(dtype), ">").c_str() : std::string(dtype_name(dtype)).c_str(),
                shape_str(e.shape).c_str(), bytes,
                q ? (it->second.blocksize ? std::to_string(it->second.blocksize).c_str() : "global") : "-",
                q ? it->second.code.c_str() : "-", q && bytes > 0 ? cat(std::round(orig_bytes / bytes * 100) / 100, "x").c_str() : "-");
    if (check) {
      const auto* o = orig.find(e.name);
      if (!o) fail(op, cat("file '", original, "' has no tensor '", e.name, "'"));
      if (o->shape != e.shape)
        fail(op, cat("tensor '", e.name, "' has shape ", shape_str(e.shape), " but ", shape_str(o->shape), " in '", original, "'"));
      const Tensor got = q ? restore(op, path, index, e.name, it->second, dev) : read_safetensors_tensor(path, index, e, dev);
      const ErrorStats s = compare(got, read_safetensors_tensor(original, orig, *o, dev));
      std::printf(" %11.4g %11.4g %9.2f", s.mean_abs, s.max_abs, s.snr_db);
    }
    std::printf("\n");
  }
  std::printf("total: %.0f bytes for %.0f bytes of original tensors (%.2fx)\n", total, total_orig,
              total > 0 ? total_orig / total : 1.0);
  return 0;
}

}  // namespace

Converted quantize_checkpoint(const Args& args) {
  Checkpoint plan;
  const Written w = run_quantize_files(parse_quantize(args), &plan);
  return {w.in_bytes, w.out_bytes};
}

Converted dequantize_checkpoint(const Args& args) {
  Checkpoint plan;
  const Written w = run_dequantize_files(parse_dequantize(args), &plan);
  return {w.in_bytes, w.out_bytes};
}

int quantize(const Args& args) { return with_usage("quantize", kQuantizeUsage, [&] { return run_quantize(args); }); }
int dequantize(const Args& args) { return with_usage("dequantize", kDequantizeUsage, [&] { return run_dequantize(args); }); }
int info(const Args& args) { return with_usage("info", kInfoUsage, [&] { return run_info(args); }); }

}  // namespace octet::cli
