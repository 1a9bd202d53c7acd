// safetensors reader and writers (io.hpp). The reader trusts nothing in the file: it checks the
// header length against the file size and a 100 MB cap, parses the JSON with nlohmann-json
// (rejecting duplicate keys at any depth, which nlohmann would silently merge), checks each
// entry's dtype, rank, element count, byte count and range, rejects overlaps, and reads each
// tensor with one bounded read into a buffer sized from the checked shape. Names in messages
// are escaped and cut to 120 characters (a hostile name can be 100 MB of control bytes).
// The writers are atomic and durable: bytes go to a temporary of a name no other writer uses
// (<path>.<pid>-<n>.tmp), which is flushed (fsync), renamed onto the path, and the folder is
// flushed too; any failure (disk full, file-size limit, I/O error) throws an Error with the
// system's reason and removes the temporary, leaving a file already at the path as it was.
#include "octet/io.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <unordered_set>

namespace octet {
namespace {

using nlohmann::json;

constexpr uint64_t kMaxHeader = 100ull << 20;
constexpr size_t kMaxRank = 64;
constexpr uint64_t kMaxElements = 1ull << 48;

struct DTypeName { DType t; const char* name; };
constexpr DTypeName kNames[] = {{DType::f32, "F32"}, {DType::f64, "F64"}, {DType::f16, "F16"},
                                {DType::bf16, "BF16"}, {DType::u8, "U8"}, {DType::i32, "I32"},
                                {DType::i64, "I64"}, {DType::f8_e4m3, "F8_E4M3"}, {DType::f8_e5m2, "F8_E5M2"}};

std::string shown(const std::string& s) {
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < 120; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  return out + (s.size() > 120 ? "...'" : "'");
}

// Reader context: every failure names the function, the file and (when known) the tensor.
struct Reader {
  const char* op;
  const std::string& path;
  [[noreturn]] void bad(const std::string& what) const { fail(op, cat("file '", path, "': ", what)); }
  [[noreturn]] void bad(const std::string& name, const std::string& what) const {
    bad(cat("tensor ", shown(name), ": ", what));
  }
};

uint64_t file_size_of(const Reader& r) {
  std::error_code ec;
  if (std::filesystem::is_directory(r.path, ec)) r.bad("is a directory");
  const uint64_t size = std::filesystem::file_size(r.path, ec);
  if (ec) r.bad(cat("cannot be read (", ec.message(), ")"));
  return size;
}

// The structural checks shared by the index parser and read_safetensors_tensor.
void check_entry(const Reader& r, const SafetensorsEntry& e, uint64_t data_size) {
  if (e.shape.size() > kMaxRank) r.bad(e.name, cat("shape has ", e.shape.size(), " dimensions (at most ", kMaxRank, ")"));
  uint64_t count = 1;
  for (int64_t d : e.shape) {
    if (d < 0) r.bad(e.name, "shape holds a value that is not a non-negative integer");
    const uint64_t dim = static_cast<uint64_t>(d);
    if (dim > kMaxElements || (dim != 0 && count > kMaxElements / dim))
      r.bad(e.name, cat("shape has more than 2^48 elements"));
    count *= dim;
  }
  if (e.begin > e.end) r.bad(e.name, cat("data_offsets [", e.begin, ", ", e.end, "] are reversed"));
  if (e.end > data_size)
    r.bad(e.name, cat("data_offsets [", e.begin, ", ", e.end, "] lie outside the ", data_size, " data bytes"));
  const uint64_t expected = count * dtype_size(e.dtype);
  if (e.end - e.begin != expected)
    r.bad(e.name, cat("holds ", e.end - e.begin, " bytes but shape ", shape_str(e.shape), " of ",
                      safetensors_dtype_name(e.dtype), " needs ", expected));
}

json parse_header(const Reader& r, const std::string& header) {
  // nlohmann keeps the last of duplicate keys: catch them while parsing, at every depth.
  std::vector<std::unordered_set<std::string>> open;
  std::string duplicate;
  auto on_event = [&](int, json::parse_event_t ev, json& parsed) {
    if (ev == json::parse_event_t::object_start) {
      open.emplace_back();
    } else if (ev == json::parse_event_t::object_end) {
      if (!open.empty()) open.pop_back();
    } else if (ev == json::parse_event_t::key && !open.empty() && parsed.is_string()) {
      if (!open.back().insert(parsed.get<std::string>()).second && duplicate.empty())
        duplicate = parsed.get<std::string>();
    }
    return true;
  };
  json j;
  try {
    j = json::parse(header, on_event);
  } catch (const json::exception& e) {
    r.bad(cat("header is not valid JSON (", e.what(), ")"));
  }
  if (!duplicate.empty()) r.bad(cat("key ", shown(duplicate), " appears more than once in the header"));
  if (!j.is_object()) r.bad("header is not a JSON object");
  return j;
}

SafetensorsEntry parse_entry(const Reader& r, const std::string& name, const json& v, uint64_t data_size) {
  if (name.empty()) r.bad("a tensor has an empty name");
  if (!v.is_object()) r.bad(name, "entry is not an object");
  SafetensorsEntry e;
  e.name = name;
  const auto dt = v.find("dtype");
  if (dt == v.end() || !dt->is_string()) r.bad(name, "missing dtype");
  try {
    e.dtype = parse_safetensors_dtype(dt->get<std::string>());
  } catch (const Error&) {
    r.bad(name, cat("unsupported dtype ", shown(dt->get<std::string>())));
  }
  const auto shape = v.find("shape");
  if (shape == v.end() || !shape->is_array()) r.bad(name, "missing shape");
  if (shape->size() > kMaxRank) r.bad(name, cat("shape has ", shape->size(), " dimensions (at most ", kMaxRank, ")"));
  for (const auto& d : *shape) {
    if (!d.is_number_unsigned() || d.get<uint64_t>() > kMaxElements)
      r.bad(name, d.is_number_unsigned() ? "shape has more than 2^48 elements"
                                         : "shape holds a value that is not a non-negative integer");
    e.shape.push_back(static_cast<int64_t>(d.get<uint64_t>()));
  }
  const auto off = v.find("data_offsets");
  if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
      !(*off)[1].is_number_unsigned())
    r.bad(name, "data_offsets must be two non-negative integers");
  e.begin = (*off)[0].get<uint64_t>();
  e.end = (*off)[1].get<uint64_t>();
  check_entry(r, e, data_size);
  return e;
}

SafetensorsIndex read_index(const Reader& r) {
  const uint64_t file_size = file_size_of(r);
  std::ifstream f(r.path, std::ios::binary);
  if (!f) r.bad("cannot be opened");
  if (file_size < 8) r.bad(cat("truncated: ", file_size, " bytes, too short for the 8-byte header length"));
  unsigned char len_bytes[8];
  if (!f.read(reinterpret_cast<char*>(len_bytes), 8)) r.bad("read error in the header length");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  if (header_len > kMaxHeader) r.bad(cat("header length ", header_len, " exceeds the limit of ", kMaxHeader, " bytes"));
  if (header_len > file_size - 8)
    r.bad(cat("truncated: header length ", header_len, " but only ", file_size - 8, " bytes follow"));
  std::string header(static_cast<size_t>(header_len), '\0');
  if (!f.read(header.data(), static_cast<std::streamsize>(header_len))) r.bad("read error in the header");
  const json j = parse_header(r, header);

  SafetensorsIndex index;
  index.data_start = 8 + header_len;
  const uint64_t data_size = file_size - index.data_start;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() != "__metadata__") {
      index.entries.push_back(parse_entry(r, it.key(), it.value(), data_size));
      continue;
    }
    if (!it.value().is_object()) r.bad("__metadata__ is not an object");
    for (auto m = it.value().begin(); m != it.value().end(); ++m) {
      if (!m.value().is_string()) r.bad(cat("__metadata__ entry ", shown(m.key()), " is not a string"));
      index.metadata[m.key()] = m.value().get<std::string>();
    }
  }
  std::sort(index.entries.begin(), index.entries.end(),
            [](const auto& a, const auto& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  // Sorted by begin, any overlap shows between neighbours.
  for (size_t i = 1; i < index.entries.size(); ++i) {
    const auto& p = index.entries[i - 1];
    const auto& c = index.entries[i];
    if (c.begin < p.end)
      r.bad(cat("tensors ", shown(p.name), " and ", shown(c.name), " overlap ([", p.begin, ", ", p.end, ") and [",
                c.begin, ", ", c.end, "))"));
  }
  return index;
}

Tensor read_tensor(const Reader& r, const SafetensorsIndex& index, const SafetensorsEntry& e, Device device) {
  const uint64_t file_size = file_size_of(r);
  if (index.data_start < 8 || index.data_start > file_size)
    r.bad(cat("index data_start ", index.data_start, " lies outside the file (", file_size, " bytes)"));
  check_entry(r, e, file_size - index.data_start);
  Tensor host = Tensor::empty(e.shape, e.dtype, Device::cpu());
  if (e.end > e.begin) {
    std::ifstream f(r.path, std::ios::binary);
    if (!f) r.bad("cannot be opened");
    f.seekg(static_cast<std::streamoff>(index.data_start + e.begin));
    f.read(static_cast<char*>(host.data()), static_cast<std::streamsize>(e.end - e.begin));
    if (!f) r.bad(e.name, "read error (file changed or truncated?)");
  }
  return host.to(device);
}

void check_name(const char* op, const std::string& name) {
  if (name.empty() || name == "__metadata__")
    fail_arg(op, "name", "a non-empty tensor name other than __metadata__", shown(name));
}

// Serializes the header, padded with spaces so that the data starts 8-byte aligned.
std::string header_bytes(const char* op, const json& j) {
  std::string header;
  try {
    header = j.dump();
  } catch (const json::exception& e) {
    fail_arg(op, "name", "tensor names and metadata in valid UTF-8", e.what());
  }
  while ((8 + header.size()) % 8 != 0) header.push_back(' ');
  if (header.size() > kMaxHeader)
    fail(op, cat("header of ", header.size(), " bytes exceeds the limit of ", kMaxHeader, " bytes"));
  return header;
}

// The system's reason for the last failed call, e.g. "No space left on device (errno 28)".
std::string reason() { return cat(std::strerror(errno), " (errno ", errno, ")"); }

// A temporary name next to `path` that no other writer (thread or process) uses at the same time.
std::string temporary_for(const std::string& path, const char* suffix) {
  static std::atomic<uint64_t> counter{0};
  return cat(path, ".", ::getpid(), "-", counter.fetch_add(1), suffix);
}

// Writes a file atomically: bytes go to a fresh temporary; commit() flushes it to the disk,
// renames it onto the path and flushes the folder. Destroyed without commit() (or after a failed
// write), it removes the temporary and the path keeps what it had.
class AtomicFile {
 public:
  AtomicFile(const char* op, std::string path) : op_(op), path_(std::move(path)), tmp_(temporary_for(path_, ".tmp")) {
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd_ < 0) fail(op_, cat("cannot create '", tmp_, "' to write '", path_, "': ", reason()));
  }
  ~AtomicFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(tmp_.c_str());
  }
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t bytes) {
    const char* p = static_cast<const char*>(data);
    while (bytes > 0) {
      const ssize_t n = ::write(fd_, p, std::min<size_t>(bytes, size_t(1) << 30));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) fail(op_, cat("cannot write '", path_, "' (", written_ + bytes, " bytes still to write after ",
                                written_, "): ", n < 0 ? reason() : std::string("the write wrote nothing")));
      p += n;
      bytes -= static_cast<size_t>(n);
      written_ += static_cast<uint64_t>(n);
    }
  }
  void commit() {
    if (::fsync(fd_) != 0) fail(op_, cat("cannot flush '", tmp_, "' to the disk: ", reason()));
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) fail(op_, cat("cannot close '", tmp_, "': ", reason()));
    if (::rename(tmp_.c_str(), path_.c_str()) != 0)
      fail(op_, cat("cannot rename '", tmp_, "' to '", path_, "': ", reason()));
    committed_ = true;
    // The rename is durable once the folder's entry is on the disk; a folder that cannot be
    // opened or flushed (some file systems) leaves the new file in place all the same.
    const std::filesystem::path parent = std::filesystem::path(path_).parent_path();
    const int dir = ::open(parent.empty() ? "." : parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir >= 0) {
      (void)::fsync(dir);
      ::close(dir);
    }
  }

 private:
  const char* op_;
  std::string path_, tmp_;
  int fd_ = -1;
  uint64_t written_ = 0;
  bool committed_ = false;
};

void write_header(AtomicFile& f, const std::string& header) {
  unsigned char len_bytes[8];
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<unsigned char>(uint64_t(header.size()) >> (8 * i));
  f.write(len_bytes, 8);
  f.write(header.data(), header.size());
}

json entry_json(DType dtype, const Shape& shape, uint64_t begin, uint64_t end) {
  return {{"dtype", safetensors_dtype_name(dtype)}, {"shape", shape}, {"data_offsets", {begin, end}}};
}

void remove_quietly(const std::string& p) {
  std::error_code ec;
  std::filesystem::remove(p, ec);
}

}  // namespace

const SafetensorsEntry* SafetensorsIndex::find(const std::string& name) const {
  for (const auto& e : entries) if (e.name == name) return &e;
  return nullptr;
}

std::string safetensors_dtype_name(DType t) {
  for (const auto& n : kNames) if (n.t == t) return n.name;
  return "?";
}

DType parse_safetensors_dtype(const std::string& name) {
  for (const auto& n : kNames) if (name == n.name) return n.t;
  fail_arg("parse_safetensors_dtype", "dtype", "one of F32, F64, F16, BF16, U8, I32, I64, F8_E4M3, F8_E5M2",
           shown(name));
}

SafetensorsIndex read_safetensors_index(const std::string& path) {
  return read_index(Reader{"read_safetensors_index", path});
}

Tensor read_safetensors_tensor(const std::string& path, const SafetensorsIndex& index, const SafetensorsEntry& e,
                               Device device) {
  return read_tensor(Reader{"read_safetensors_tensor", path}, index, e, device);
}

TensorMap load_safetensors(const std::string& path, Device device) {
  const Reader r{"load_safetensors", path};
  const SafetensorsIndex index = read_index(r);
  TensorMap out;
  for (const auto& e : index.entries) out.emplace(e.name, read_tensor(r, index, e, device));
  return out;
}

Metadata load_safetensors_metadata(const std::string& path) {
  return read_index(Reader{"load_safetensors_metadata", path}).metadata;
}

void save_safetensors(const std::string& path, const TensorMap& tensors, const Metadata& metadata) {
  const char* op = "save_safetensors";
  json j = json::object();
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    check_name(op, name);
    if (!t.defined()) fail_arg(op, name, "a defined tensor", "an undefined tensor");
    j[name] = entry_json(t.dtype(), t.shape(), offset, offset + t.nbytes());
    offset += t.nbytes();
  }
  if (!metadata.empty()) j["__metadata__"] = metadata;
  const std::string header = header_bytes(op, j);
  AtomicFile f(op, path);
  write_header(f, header);
  for (const auto& [name, t] : tensors) {
    const Tensor host = t.to(Device::cpu());
    f.write(host.data(), host.nbytes());
  }
  f.commit();
}

SafetensorsWriter::SafetensorsWriter(std::string path)
    : path_(std::move(path)), data_path_(temporary_for(path_, ".data.tmp")) {
  data_.open(data_path_, std::ios::binary | std::ios::trunc);
  if (!data_) fail("SafetensorsWriter", cat("cannot create '", data_path_, "' to write '", path_, "': ", reason()));
}

SafetensorsWriter::~SafetensorsWriter() {
  if (closed_) return;
  data_.close();
  remove_quietly(data_path_);
}

void SafetensorsWriter::add(const std::string& name, const Tensor& t) {
  const char* op = "SafetensorsWriter::add";
  if (closed_) fail(op, cat("'", path_, "' is already closed"));
  check_name(op, name);
  if (!t.defined()) fail_arg(op, name, "a defined tensor", "an undefined tensor");
  if (!names_.insert(name).second) fail_arg(op, "name", "a name not added before", shown(name));
  const Tensor host = t.to(Device::cpu());
  errno = 0;
  data_.write(static_cast<const char*>(host.data()), static_cast<std::streamsize>(host.nbytes()));
  if (!data_.flush()) {
    names_.erase(name);
    fail(op, cat("cannot write tensor ", shown(name), " to '", data_path_, "': ", reason()));
  }
  entries_.push_back({name, t.dtype(), t.shape(), offset_, offset_ + t.nbytes()});
  offset_ += t.nbytes();
}

void SafetensorsWriter::set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }

void SafetensorsWriter::close() {
  const char* op = "SafetensorsWriter::close";
  if (closed_) fail(op, cat("'", path_, "' is already closed"));
  json j = json::object();
  for (const auto& e : entries_) j[e.name] = entry_json(e.dtype, e.shape, e.begin, e.end);
  if (!metadata_.empty()) j["__metadata__"] = metadata_;
  const std::string header = header_bytes(op, j);
  errno = 0;
  data_.close();
  if (!data_) fail(op, cat("cannot write '", data_path_, "': ", reason()));
  std::ifstream in(data_path_, std::ios::binary);
  if (!in) fail(op, cat("cannot reopen '", data_path_, "': ", reason()));
  AtomicFile out(op, path_);
  write_header(out, header);
  std::vector<char> buf(size_t(8) << 20);
  uint64_t copied = 0;
  while (in.read(buf.data(), static_cast<std::streamsize>(buf.size())) || in.gcount() > 0) {
    out.write(buf.data(), static_cast<size_t>(in.gcount()));
    copied += static_cast<uint64_t>(in.gcount());
  }
  if (copied != offset_) fail(op, cat("'", data_path_, "' holds ", copied, " bytes, ", offset_, " were written"));
  out.commit();
  in.close();
  remove_quietly(data_path_);
  closed_ = true;
}

}  // namespace octet
