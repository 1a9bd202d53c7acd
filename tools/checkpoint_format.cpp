// The stored form of quantized tensors (checkpoint_format.hpp): metadata, state tensor names,
// the checks on reading and the restoring of the floats.
#include "tools/checkpoint_format.hpp"

#include <nlohmann/json.hpp>

namespace octet::cli {
namespace {

using nlohmann::json;

[[noreturn]] void bad(const char* op, const std::string& path, const std::string& tensor, const std::string& what) {
  fail(op, cat("file '", path, "': tensor '", tensor, "': ", what));
}

QuantInfo parse_info(const char* op, const std::string& path, const std::string& t, const std::string& text) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception&) {
    bad(op, path, t, cat("metadata ", kQuantPrefix, t, " is not valid JSON"));
  }
  QuantInfo q;
  const auto b = j.is_object() ? j.find("blocksize") : j.end();
  const auto d = j.is_object() ? j.find("dtype") : j.end();
  const auto n = j.is_object() ? j.find("nested") : j.end();
  const auto c = j.is_object() ? j.find("code") : j.end();
  if (b == j.end() || d == j.end() || n == j.end() || c == j.end() || !b->is_number_unsigned() || !d->is_string() ||
      !n->is_boolean() || !c->is_string())
    bad(op, path, t,
        cat("metadata ", kQuantPrefix, t,
            " must be {\"blocksize\": int, \"dtype\": str, \"nested\": bool, \"code\": str}"));
  const uint64_t bs = b->get<uint64_t>();
  if (bs != 0 && (bs < 32 || bs > 4096 || (bs & (bs - 1)) != 0))
    bad(op, path, t, cat("blocksize ", bs, " is neither 0 nor a power of two in [32, 4096]"));
  q.blocksize = static_cast<int64_t>(bs);
  try {
    q.dtype = parse_safetensors_dtype(d->get<std::string>());
  } catch (const Error&) {
    q.dtype = DType::u8;
  }
  if (!quantizable(q.dtype))
    bad(op, path, t, cat("original dtype '", d->get<std::string>(), "' is not F32, F16, BF16 or F64"));
  q.nested = n->get<bool>();
  if (q.nested && q.blocksize == 0) bad(op, path, t, "nested is only defined for blockwise quantization");
  q.code = c->get<std::string>();
  return q;
}

}  // namespace

bool quantizable(DType t) { return t == DType::f32 || t == DType::f16 || t == DType::bf16 || t == DType::f64; }

std::string QuantInfo::to_json() const {
  return json{{"blocksize", blocksize}, {"dtype", safetensors_dtype_name(dtype)}, {"nested", nested}, {"code", code}}
      .dump();
}

std::vector<std::string> QuantInfo::state_names(const std::string& t) const {
  std::vector<std::string> n{t + ".absmax", t + ".code"};
  if (nested) n.insert(n.end(), {t + ".absmax.offset", t + ".absmax.absmax", t + ".absmax.code"});
  return n;
}

std::vector<std::pair<std::string, Tensor>> stored_tensors(const std::string& name, const Quantized& q) {
  std::vector<std::pair<std::string, Tensor>> parts{
      {name, q.codes}, {name + ".absmax", q.state.absmax}, {name + ".code", q.state.code}};
  if (q.state.nested)
    parts.insert(parts.end(), {{name + ".absmax.offset", q.state.offset},
                               {name + ".absmax.absmax", q.state.state2->absmax},
                               {name + ".absmax.code", q.state.state2->code}});
  return parts;
}

std::vector<SafetensorsEntry> stored_layout(const std::string& name, const Shape& shape, int64_t blocksize,
                                            bool nested) {
  const int64_t n = shape_numel(shape), blocks = blocksize ? (n + blocksize - 1) / blocksize : 1;
  std::vector<SafetensorsEntry> out{{name, DType::u8, shape},
                                    {name + ".absmax", nested ? DType::u8 : DType::f32, Shape{blocks}},
                                    {name + ".code", DType::f32, Shape{256}}};
  if (nested)
    out.insert(out.end(), {{name + ".absmax.offset", DType::f32, Shape{}},
                           {name + ".absmax.absmax", DType::f32, Shape{(blocks + blocksize - 1) / blocksize}},
                           {name + ".absmax.code", DType::f32, Shape{256}}});
  return out;
}

QuantizedFile quantized_of(const char* op, const std::string& path, const SafetensorsIndex& index) {
  QuantizedFile out;
  for (const auto& [key, value] : index.metadata) {
    if (key.rfind(kQuantPrefix, 0) != 0) continue;
    const std::string t = key.substr(std::string(kQuantPrefix).size());
    QuantInfo q = parse_info(op, path, t, value);
    const auto* codes = index.find(t);
    if (!codes) bad(op, path, t, cat("metadata ", key, " names a tensor that is not in the file"));
    if (codes->dtype != DType::u8)
      bad(op, path, t, cat("codes must be U8, got ", safetensors_dtype_name(codes->dtype)));
    for (const auto& s : q.state_names(t)) {
      if (!index.find(s)) bad(op, path, t, cat("its state tensor '", s, "' is missing"));
      if (!out.state.insert(s).second)
        bad(op, path, t, cat("its state tensor '", s, "' belongs to another tensor too"));
    }
    out.tensors.emplace(t, std::move(q));
  }
  for (const auto& [t, q] : out.tensors)
    if (out.state.count(t)) bad(op, path, t, "is both a quantized tensor and the state of another");
  return out;
}

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

}  // namespace octet::cli
