// octet quantize / dequantize / info: 8-bit quantized safetensors checkpoints (docs/checkpoints.md).
// A quantized tensor T is stored as T (u8 codes, T's shape), T.absmax (f32 [blocks], or u8 codes
// when nested, with T.absmax.offset f32 [], T.absmax.absmax f32, T.absmax.code f32 [256]) and
// T.code (f32 [256]); header metadata "octet.T" holds {"blocksize", "dtype", "nested", "code"}.
// Files are processed one tensor at a time (SafetensorsWriter), so peak memory stays a few
// times the largest tensor. Everything read from a file is checked; problems are octet::Error
// naming the file and tensor (exit 1), bad command lines are UsageError (exit 2).
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <regex>

#include "octet/octet.hpp"
#include "tools/args.hpp"

namespace octet::cli {
namespace {

using nlohmann::json;

const char* kQuantizeUsage =
    "usage: octet quantize IN OUT [--blocksize N | --global] [--code dynamic|fp8-e4m3|fp8-e5m2|linear]\n"
    "                      [--nested] [--device cpu|cuda] [--skip REGEX]\n"
    "  Quantizes every f32/f16/bf16/f64 tensor of IN whose name does not match REGEX to 8-bit codes\n"
    "  (blockwise, blocksize a power of two in [32, 4096], default 4096; --global: one absmax per tensor).\n";
const char* kDequantizeUsage = "usage: octet dequantize IN OUT [--device cpu|cuda]\n";
const char* kInfoUsage = "usage: octet info FILE [--check ORIGINAL] [--device cpu|cuda]\n";

constexpr const char* kPrefix = "octet.";

Code code_named(const std::string& name) {
  if (name == "dynamic") return Code::dynamic();
  if (name == "fp8-e4m3") return Code::fp8_e4m3();
  if (name == "fp8-e5m2") return Code::fp8_e5m2();
  if (name == "linear") return Code::linear();
  throw UsageError(cat("--code expects dynamic, fp8-e4m3, fp8-e5m2 or linear, got '", name, "'"));
}

bool quantizable(DType t) { return t == DType::f32 || t == DType::f16 || t == DType::bf16 || t == DType::f64; }

// What "octet.T" records about a quantized tensor T.
struct QuantInfo {
  int64_t blocksize = 0;  // 0: global
  DType dtype = DType::f32;
  bool nested = false;
  std::string code;

  std::string to_json() const {
    return json{{"blocksize", blocksize}, {"dtype", safetensors_dtype_name(dtype)}, {"nested", nested}, {"code", code}}.dump();
  }
  // The state tensors stored next to T.
  std::vector<std::string> state_names(const std::string& t) const {
    std::vector<std::string> n{t + ".absmax", t + ".code"};
    if (nested) n.insert(n.end(), {t + ".absmax.offset", t + ".absmax.absmax", t + ".absmax.code"});
    return n;
  }
};

[[noreturn]] void bad(const char* op, const std::string& path, const std::string& tensor, const std::string& what) {
  fail(op, cat("file '", path, "': tensor '", tensor, "': ", what));
}

QuantInfo parse_info(const char* op, const std::string& path, const std::string& t, const std::string& text) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception&) {
    bad(op, path, t, cat("metadata ", kPrefix, t, " is not valid JSON"));
  }
  QuantInfo q;
  const auto b = j.is_object() ? j.find("blocksize") : j.end();
  const auto d = j.is_object() ? j.find("dtype") : j.end();
  const auto n = j.is_object() ? j.find("nested") : j.end();
  const auto c = j.is_object() ? j.find("code") : j.end();
  if (b == j.end() || d == j.end() || n == j.end() || c == j.end() || !b->is_number_unsigned() || !d->is_string() ||
      !n->is_boolean() || !c->is_string())
    bad(op, path, t, cat("metadata ", kPrefix, t, " must be {\"blocksize\": int, \"dtype\": str, \"nested\": bool, \"code\": str}"));
  const uint64_t bs = b->get<uint64_t>();
  if (bs != 0 && (bs < 32 || bs > 4096 || (bs & (bs - 1)) != 0))
    bad(op, path, t, cat("blocksize ", bs, " is neither 0 nor a power of two in [32, 4096]"));
  q.blocksize = static_cast<int64_t>(bs);
  try {
    q.dtype = parse_safetensors_dtype(d->get<std::string>());
  } catch (const Error&) {
    q.dtype = DType::u8;
  }
  if (!quantizable(q.dtype)) bad(op, path, t, cat("original dtype '", d->get<std::string>(), "' is not F32, F16, BF16 or F64"));
  q.nested = n->get<bool>();
  if (q.nested && q.blocksize == 0) bad(op, path, t, "nested is only defined for blockwise quantization");
  q.code = c->get<std::string>();
  return q;
}

// The quantized tensors of a file (from its "octet.*" metadata), each checked against the index,
// and the names of their state tensors (each owned by exactly one quantized tensor).
struct QuantizedFile {
  std::map<std::string, QuantInfo> tensors;
  std::set<std::string> state;
};

QuantizedFile quantized_of(const char* op, const std::string& path, const SafetensorsIndex& index) {
  QuantizedFile out;
  for (const auto& [key, value] : index.metadata) {
    if (key.rfind(kPrefix, 0) != 0) continue;
    const std::string t = key.substr(std::string(kPrefix).size());
    QuantInfo q = parse_info(op, path, t, value);
    const auto* codes = index.find(t);
    if (!codes) bad(op, path, t, cat("metadata ", key, " names a tensor that is not in the file"));
    if (codes->dtype != DType::u8) bad(op, path, t, cat("codes must be U8, got ", safetensors_dtype_name(codes->dtype)));
    for (const auto& s : q.state_names(t)) {
      if (!index.find(s)) bad(op, path, t, cat("its state tensor '", s, "' is missing"));
      if (!out.state.insert(s).second) bad(op, path, t, cat("its state tensor '", s, "' belongs to another tensor too"));
    }
    out.tensors.emplace(t, std::move(q));
  }
  for (const auto& [t, q] : out.tensors)
    if (out.state.count(t)) bad(op, path, t, "is both a quantized tensor and the state of another");
  return out;
}

// Restores the floats of quantized tensor t exactly as dequantize / dequantize_blockwise give them.
Tensor restore(const char* op, const std::string& path, const SafetensorsIndex& index, const std::string& t,
               const QuantInfo& q, Device dev) {
  auto read = [&](const std::string& name) { return read_safetensors_tensor(path, index, *index.find(name), dev); };
  try {
    const Tensor codes = read(t);
    QuantState st;
    st.absmax = read(t + ".absmax");
    st.code = read(t + ".code");
    st.blocksize = q.blocksize;
    st.dtype = q.dtype == DType::f64 ? DType::f32 : q.dtype;
    st.shape = codes.shape();
    if (q.nested) {
      st.nested = true;
      st.offset = read(t + ".absmax.offset");
      auto inner = std::make_shared<QuantState>();
      inner->absmax = read(t + ".absmax.absmax");
      inner->code = read(t + ".absmax.code");
      inner->blocksize = q.blocksize;
      inner->dtype = DType::f32;
      inner->shape = st.absmax.shape();
      st.state2 = inner;
    }
    const Tensor x = q.blocksize ? dequantize_blockwise(codes, st) : dequantize(codes, st);
    return q.dtype == DType::f64 ? x.to(DType::f64) : x;
  } catch (const Error& e) {
    bad(op, path, t, e.what());
  }
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

int run_quantize(const Args& args) {
  ArgParser p(args, {"--global", "--nested"}, {"--blocksize", "--code", "--device", "--skip"});
  if (p.positional().size() != 2) throw UsageError("expects IN and OUT");
  if (p.has("--global") && p.has("--blocksize")) throw UsageError("--global and --blocksize exclude each other");
  if (p.has("--global") && p.has("--nested")) throw UsageError("--nested needs blockwise quantization (not --global)");
  const int64_t blocksize = p.has("--global") ? 0 : p.integer("--blocksize", 4096, 32, 4096);
  if (blocksize & (blocksize - 1)) throw UsageError(cat("--blocksize must be a power of two, got ", blocksize));
  const std::string code_name = p.get("--code", "dynamic");
  const Code code = code_named(code_name);
  std::regex skip;
  try {
    if (p.has("--skip")) skip = std::regex(p.get("--skip"), std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    throw UsageError(cat("--skip: invalid regular expression '", p.get("--skip"), "' (", e.what(), ")"));
  }
  const Device dev = p.device();
  const std::string& in = p.positional()[0];
  const std::string& out = p.positional()[1];
  const char* op = "octet quantize";

  const SafetensorsIndex index = read_safetensors_index(in);
  for (const auto& [key, value] : index.metadata)
    if (key.rfind(kPrefix, 0) == 0)
      fail(op, cat("file '", in, "' already holds quantized tensors (metadata ", key, "); dequantize it first"));
  const QuantInfo info{blocksize, DType::f32, p.has("--nested"), code_name};
  std::set<std::string> names;  // every name of the output, to catch collisions before writing
  std::map<std::string, std::string> owner;
  for (const auto& e : index.entries) names.insert(e.name);
  auto selected = [&](const SafetensorsEntry& e) {
    return quantizable(e.dtype) && !(p.has("--skip") && std::regex_search(e.name, skip));
  };
  for (const auto& e : index.entries) {
    if (!selected(e)) continue;
    for (const auto& s : info.state_names(e.name))
      if (!names.insert(s).second)
        fail(op, cat("file '", in, "': tensor '", e.name, "': its state tensor '", s, "' would collide with ",
                     owner.count(s) ? cat("a state tensor of '", owner[s], "'") : std::string("a tensor of the input"),
                     " (rename it or use --skip)"));
      else owner[s] = e.name;
  }

  SafetensorsWriter w(out);
  Progress progress(index.entries.size());
  double before = 0, after = 0;
  size_t count = 0;
  for (const auto& e : index.entries) {
    const Tensor t = read_safetensors_tensor(in, index, e, dev);
    before += static_cast<double>(t.nbytes());
    if (!selected(e)) {
      w.add(e.name, t);
      after += static_cast<double>(t.nbytes());
      progress.step(e.name);
      continue;
    }
    const Tensor a = t.dtype() == DType::f64 ? t.to(DType::f32) : t;
    const Quantized q = blocksize ? quantize_blockwise(a, code, blocksize, info.nested) : quantize(a, code);
    std::vector<std::pair<std::string, Tensor>> parts{
        {e.name, q.codes}, {e.name + ".absmax", q.state.absmax}, {e.name + ".code", q.state.code}};
    if (info.nested)
      parts.insert(parts.end(), {{e.name + ".absmax.offset", q.state.offset},
                                 {e.name + ".absmax.absmax", q.state.state2->absmax},
                                 {e.name + ".absmax.code", q.state.state2->code}});
    for (const auto& [name, x] : parts) {
      w.add(name, x);
      after += static_cast<double>(x.nbytes());
    }
    QuantInfo qi = info;
    qi.dtype = e.dtype;
    w.set_metadata(kPrefix + e.name, qi.to_json());
    ++count;
    progress.step(e.name);
  }
  for (const auto& [key, value] : index.metadata) w.set_metadata(key, value);
  w.close();
  std::printf("%s: quantized %zu of %zu tensors (%s, code %s%s) on %s: %s -> %s (%.2fx)\n", out.c_str(), count,
              index.entries.size(), blocksize ? cat("blocksize ", blocksize).c_str() : "global", code_name.c_str(),
              info.nested ? ", nested absmax" : "", dev.str().c_str(), mb(before).c_str(), mb(after).c_str(),
              after > 0 ? before / after : 1.0);
  return 0;
}

int run_dequantize(const Args& args) {
  ArgParser p(args, {}, {"--device"});
  if (p.positional().size() != 2) throw UsageError("expects IN and OUT");
  const Device dev = p.device();
  const std::string& in = p.positional()[0];
  const std::string& out = p.positional()[1];
  const char* op = "octet dequantize";
  const SafetensorsIndex index = read_safetensors_index(in);
  const auto [quantized, state] = quantized_of(op, in, index);
  SafetensorsWriter w(out);
  Progress progress(index.entries.size() - state.size());
  for (const auto& e : index.entries) {
    if (state.count(e.name)) continue;
    const auto it = quantized.find(e.name);
    w.add(e.name, it != quantized.end() ? restore(op, in, index, e.name, it->second, dev)
                                        : read_safetensors_tensor(in, index, e, dev));
    progress.step(e.name);
  }
  for (const auto& [key, value] : index.metadata)
    if (key.rfind(kPrefix, 0) != 0) w.set_metadata(key, value);
  w.close();
  std::printf("%s: restored %zu quantized tensors, copied %zu\n", out.c_str(), quantized.size(),
              index.entries.size() - state.size() - quantized.size());
  return 0;
}

struct ErrorStats {
  double mean_abs = 0, max_abs = 0, snr_db = 0;
};

// Error of `got` against `want` in f64 on the host; SNR = 10 log10(sum want^2 / sum (got - want)^2).
ErrorStats compare(const Tensor& got, const Tensor& want) {
  const std::vector<double> g = got.to_vector<double>(), r = want.to_vector<double>();
  double sum_abs = 0, signal = 0, noise = 0, mx = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    const double d = g[i] - r[i];
    sum_abs += std::fabs(d);
    mx = std::fmax(mx, std::fabs(d));
    signal += r[i] * r[i];
    noise += d * d;
  }
  ErrorStats s;
  s.mean_abs = g.empty() ? 0 : sum_abs / static_cast<double>(g.size());
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

int quantize(const Args& args) { return with_usage("quantize", kQuantizeUsage, [&] { return run_quantize(args); }); }
int dequantize(const Args& args) { return with_usage("dequantize", kDequantizeUsage, [&] { return run_dequantize(args); }); }
int info(const Args& args) { return with_usage("info", kInfoUsage, [&] { return run_info(args); }); }

}  // namespace octet::cli
