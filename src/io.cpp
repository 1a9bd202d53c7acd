// safetensors reader and writer (io.hpp). The reader trusts nothing in the file: it checks the
// header length against the file size and a 100 MB cap, parses the JSON with nlohmann-json,
// checks each entry's dtype, shape, byte count and range, rejects duplicates and overlaps,
// and reads each tensor with one bounded read.
#include "octet/io.hpp"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <unordered_set>

namespace octet {
namespace {

constexpr uint64_t kMaxHeader = 100ull << 20;

struct DTypeName { DType t; const char* name; };
constexpr DTypeName kNames[] = {{DType::f32, "F32"}, {DType::f64, "F64"}, {DType::f16, "F16"},
                                {DType::bf16, "BF16"}, {DType::u8, "U8"}, {DType::i32, "I32"},
                                {DType::i64, "I64"}, {DType::f8_e4m3, "F8_E4M3"}, {DType::f8_e5m2, "F8_E5M2"}};

[[noreturn]] void bad(const std::string& path, const std::string& what) {
  fail("load_safetensors", cat("file '", path, "': ", what));
}

}  // namespace

std::string safetensors_dtype_name(DType t) {
  for (const auto& n : kNames) if (n.t == t) return n.name;
  return "?";
}

DType parse_safetensors_dtype(const std::string& name) {
  for (const auto& n : kNames) if (name == n.name) return n.t;
  fail_arg("parse_safetensors_dtype", "dtype", "one of F32, F64, F16, BF16, U8, I32, I64, F8_E4M3, F8_E5M2", name);
}

SafetensorsIndex read_safetensors_index(const std::string& path) {
  std::error_code ec;
  const uint64_t file_size = std::filesystem::file_size(path, ec);
  if (ec) bad(path, cat("cannot be read (", ec.message(), ")"));
  std::ifstream f(path, std::ios::binary);
  if (!f) bad(path, "cannot be opened");
  if (file_size < 8) bad(path, cat("truncated: ", file_size, " bytes, too short for the 8-byte header length"));
  unsigned char len_bytes[8];
  f.read(reinterpret_cast<char*>(len_bytes), 8);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  if (header_len > kMaxHeader) bad(path, cat("header length ", header_len, " exceeds the limit of ", kMaxHeader, " bytes"));
  if (header_len > file_size - 8)
    bad(path, cat("truncated: header length ", header_len, " but only ", file_size - 8, " bytes follow"));
  std::string header(static_cast<size_t>(header_len), '\0');
  f.read(header.data(), static_cast<std::streamsize>(header_len));
  if (!f) bad(path, "read error in the header");

  nlohmann::json j;
  std::string duplicate;  // nlohmann keeps the last of duplicate keys: catch them while parsing
  std::unordered_set<std::string> keys;
  auto on_event = [&](int depth, nlohmann::json::parse_event_t ev, nlohmann::json& parsed) {
    if (depth == 1 && ev == nlohmann::json::parse_event_t::key && parsed.is_string()) {
      std::string k = parsed.get<std::string>();
      if (!keys.insert(k).second && duplicate.empty()) duplicate = k;
    }
    return true;
  };
  try {
    j = nlohmann::json::parse(header, on_event);
  } catch (const nlohmann::json::exception& e) {
    bad(path, cat("header is not valid JSON (", e.what(), ")"));
  }
  if (!j.is_object()) bad(path, "header is not a JSON object");
  if (!duplicate.empty()) bad(path, cat("tensor name '", duplicate, "' appears more than once"));

  SafetensorsIndex index;
  index.data_start = 8 + header_len;
  const uint64_t data_size = file_size - index.data_start;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const auto& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) bad(path, "__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) bad(path, cat("__metadata__ entry '", m.key(), "' is not a string"));
        index.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (name.empty()) bad(path, "a tensor has an empty name");
    if (!v.is_object()) bad(path, cat("tensor '", name, "': entry is not an object"));
    SafetensorsEntry e;
    e.name = name;
    if (!v.contains("dtype") || !v["dtype"].is_string()) bad(path, cat("tensor '", name, "': missing dtype"));
    try {
      e.dtype = parse_safetensors_dtype(v["dtype"].get<std::string>());
    } catch (const Error&) {
      bad(path, cat("tensor '", name, "': unsupported dtype '", v["dtype"].get<std::string>(), "'"));
    }
    if (!v.contains("shape") || !v["shape"].is_array()) bad(path, cat("tensor '", name, "': missing shape"));
    uint64_t count = 1;
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned()) bad(path, cat("tensor '", name, "': shape holds a value that is not a non-negative integer"));
      const uint64_t dim = d.get<uint64_t>();
      if (dim > (1ull << 48) || (dim != 0 && count > (1ull << 48) / dim))
        bad(path, cat("tensor '", name, "': shape is too large"));
      count *= dim;
      e.shape.push_back(static_cast<int64_t>(dim));
    }
    if (!v.contains("data_offsets") || !v["data_offsets"].is_array() || v["data_offsets"].size() != 2 ||
        !v["data_offsets"][0].is_number_unsigned() || !v["data_offsets"][1].is_number_unsigned())
      bad(path, cat("tensor '", name, "': data_offsets must be two non-negative integers"));
    e.begin = v["data_offsets"][0].get<uint64_t>();
    e.end = v["data_offsets"][1].get<uint64_t>();
    if (e.begin > e.end) bad(path, cat("tensor '", name, "': data_offsets [", e.begin, ", ", e.end, "] are reversed"));
    if (e.end > data_size)
      bad(path, cat("tensor '", name, "': data_offsets [", e.begin, ", ", e.end, "] lie outside the ", data_size,
                    " data bytes"));
    const uint64_t expected = count * dtype_size(e.dtype);
    if (e.end - e.begin != expected)
      bad(path, cat("tensor '", name, "': holds ", e.end - e.begin, " bytes but shape ", shape_str(e.shape), " of ",
                    safetensors_dtype_name(e.dtype), " needs ", expected));
    index.entries.push_back(std::move(e));
  }
  std::sort(index.entries.begin(), index.entries.end(),
            [](const auto& a, const auto& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  for (size_t i = 1; i < index.entries.size(); ++i) {
    const auto& p = index.entries[i - 1];
    const auto& c = index.entries[i];
    if (c.begin < p.end)
      bad(path, cat("tensors '", p.name, "' and '", c.name, "' overlap ([", p.begin, ", ", p.end, ") and [", c.begin,
                    ", ", c.end, "))"));
  }
  return index;
}

Tensor read_safetensors_tensor(const std::string& path, const SafetensorsIndex& index, const SafetensorsEntry& e,
                               Device device) {
  Tensor host = Tensor::empty(e.shape, e.dtype, Device::cpu());
  if (e.end > e.begin) {
    std::ifstream f(path, std::ios::binary);
    if (!f) bad(path, "cannot be opened");
    f.seekg(static_cast<std::streamoff>(index.data_start + e.begin));
    f.read(static_cast<char*>(host.data()), static_cast<std::streamsize>(e.end - e.begin));
    if (!f) bad(path, cat("tensor '", e.name, "': read error (file changed or truncated?)"));
  }
  return host.to(device);
}

TensorMap load_safetensors(const std::string& path, Device device) {
  const SafetensorsIndex index = read_safetensors_index(path);
  TensorMap out;
  for (const auto& e : index.entries) out.emplace(e.name, read_safetensors_tensor(path, index, e, device));
  return out;
}

Metadata load_safetensors_metadata(const std::string& path) { return read_safetensors_index(path).metadata; }

void save_safetensors(const std::string& path, const TensorMap& tensors, const Metadata& metadata) {
  nlohmann::json j = nlohmann::json::object();
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name.empty() || name == "__metadata__") fail_arg("save_safetensors", "tensors", "non-empty names other than __metadata__", cat("'", name, "'"));
    if (!t.defined()) fail_arg("save_safetensors", name, "a defined tensor", "an undefined tensor");
    const uint64_t bytes = t.nbytes();
    j[name] = {{"dtype", safetensors_dtype_name(t.dtype())}, {"shape", t.shape()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  if (!metadata.empty()) j["__metadata__"] = metadata;
  std::string header = j.dump();
  while ((8 + header.size()) % 8 != 0) header.push_back(' ');  // keep the data 8-byte aligned
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) fail("save_safetensors", cat("cannot create '", tmp, "'"));
    uint64_t len = header.size();
    unsigned char len_bytes[8];
    for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<unsigned char>(len >> (8 * i));
    f.write(reinterpret_cast<const char*>(len_bytes), 8);
    f.write(header.data(), static_cast<std::streamsize>(header.size()));
    for (const auto& [name, t] : tensors) {
      const Tensor host = t.to(Device::cpu());
      f.write(static_cast<const char*>(host.data()), static_cast<std::streamsize>(host.nbytes()));
    }
    if (!f) fail("save_safetensors", cat("write error on '", tmp, "'"));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) fail("save_safetensors", cat("cannot rename '", tmp, "' to '", path, "': ", ec.message()));
}

}  // namespace octet
