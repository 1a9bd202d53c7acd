// ChunkReader and PlannedWriter (checkpoint_io.hpp).
#include "tools/checkpoint_io.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <future>
#include <nlohmann/json.hpp>

namespace octet::cli {

ChunkReader::ChunkReader(std::string path, const SafetensorsIndex& index) : path_(std::move(path)), index_(index) {
  fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) fail("ChunkReader", cat("file '", path_, "' cannot be read (", std::strerror(errno), ")"));
}

ChunkReader::~ChunkReader() {
  if (fd_ >= 0) ::close(fd_);
}

void ChunkReader::read_into(const SafetensorsEntry& e, int64_t first, const Tensor& t) const {
  const int64_t count = t.numel();
  const size_t size = dtype_size(e.dtype), bytes = static_cast<size_t>(count) * size;
  const uint64_t at = index_.data_start + e.begin + static_cast<uint64_t>(first) * size;
  if (e.begin + static_cast<uint64_t>(first + count) * size > e.end)
    fail("ChunkReader", cat("file '", path_, "': tensor '", e.name, "': elements ", first, "..", first + count,
                            " lie outside it"));
  auto* dst = static_cast<char*>(t.data());
  for (size_t done = 0; done < bytes;) {
    const ssize_t got = ::pread(fd_, dst + done, bytes - done, static_cast<off_t>(at + done));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0)
      fail("ChunkReader", cat("file '", path_, "': tensor '", e.name, "': read error (file changed or truncated?)"));
    done += static_cast<size_t>(got);
  }
}

Tensor ChunkReader::whole(const SafetensorsEntry& e) const {
  Tensor t = Tensor::empty(e.shape, e.dtype, Device::cpu());
  read_into(e, 0, t);
  return t;
}

void ChunkReader::for_each_chunk(const SafetensorsEntry& e, int64_t chunk,
                                 const std::function<void(const Tensor&, int64_t)>& fn) const {
  const int64_t n = shape_numel(e.shape);
  // The buffers are allocated here, not on the helper threads: each new thread could otherwise
  // leave freed chunks resident in a malloc arena of its own.
  auto start = [&](int64_t first) {
    Tensor t = Tensor::empty({std::min(chunk, n - first)}, e.dtype, Device::cpu());
    return std::async(std::launch::async, [this, &e, first, t] {
      read_into(e, first, t);
      return t;
    });
  };
  if (n == 0) return;
  std::future<Tensor> ahead = start(0);
  for (int64_t first = 0; first < n; first += chunk) {
    const Tensor part = ahead.get();
    if (first + chunk < n) ahead = start(first + chunk);
    try {
      fn(part, first);
    } catch (...) {
      if (ahead.valid()) ahead.wait();  // the helper thread uses e and this reader
      throw;
    }
  }
}

namespace {

constexpr const char* kOp = "PlannedWriter";

void write_all(std::FILE* f, const void* data, size_t bytes, const std::string& path) {
  if (bytes && std::fwrite(data, 1, bytes, f) != bytes) fail(kOp, cat("write error on '", path, "'"));
}

}  // namespace

PlannedWriter::PlannedWriter(std::string path, std::vector<SafetensorsEntry> entries, const Metadata& metadata)
    : path_(std::move(path)), entries_(std::move(entries)) {
  nlohmann::json header = nlohmann::json::object();
  uint64_t offset = 0;
  for (auto& e : entries_) {
    const uint64_t bytes = static_cast<uint64_t>(shape_numel(e.shape)) * dtype_size(e.dtype);
    e.begin = offset;
    e.end = offset + bytes;
    offset = e.end;
    if (header.contains(e.name)) fail(kOp, cat("'", path_, "': tensor '", e.name, "' is planned twice"));
    header[e.name] = {
        {"dtype", safetensors_dtype_name(e.dtype)}, {"shape", e.shape}, {"data_offsets", {e.begin, e.end}}};
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    fail(kOp, cat("'", path_, "': tensor names and metadata must be valid UTF-8 (", e.what(), ")"));
  }
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');  // the data starts 8-byte aligned
  const std::string tmp = path_ + ".tmp";
  file_ = std::fopen(tmp.c_str(), "wb");
  if (!file_) fail(kOp, cat("cannot create '", tmp, "'"));
  unsigned char length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>(uint64_t(text.size()) >> (8 * i));
  write_all(file_, length, 8, tmp);
  write_all(file_, text.data(), text.size(), tmp);
}

PlannedWriter::~PlannedWriter() {
  if (!file_) return;
  std::fclose(file_);
  std::error_code ec;
  std::filesystem::remove(path_ + ".tmp", ec);
}

void PlannedWriter::add_part(const std::string& name, const Tensor& t) {
  if (!file_) fail(kOp, cat("'", path_, "' is already closed"));
  if (next_ >= entries_.size()) fail(kOp, cat("'", path_, "': tensor '", name, "' was not planned"));
  const SafetensorsEntry& e = entries_[next_];
  if (e.name != name || e.dtype != t.dtype() || e.begin + written_ + t.nbytes() > e.end)
    fail(kOp, cat("'", path_, "': got ", t.nbytes(), " bytes of ", dtype_name(t.dtype()), " tensor '", name,
                  "', planned ", e.end - e.begin - written_, " more bytes of ", dtype_name(e.dtype), " tensor '",
                  e.name, "'"));
  const Tensor host = t.to(Device::cpu());
  write_all(file_, host.data(), host.nbytes(), path_ + ".tmp");
  written_ += host.nbytes();
  if (e.begin + written_ == e.end) {
    ++next_;
    written_ = 0;
  }
}

void PlannedWriter::add(const std::string& name, const Tensor& t) {
  if (next_ < entries_.size() && entries_[next_].name == name && entries_[next_].shape != t.shape())
    fail(kOp, cat("'", path_, "': tensor '", name, "' has shape ", shape_str(t.shape()), ", planned ",
                  shape_str(entries_[next_].shape)));
  if (next_ < entries_.size() && written_ != 0) fail(kOp, cat("'", path_, "': tensor '", name, "' is half written"));
  add_part(name, t);
}

void PlannedWriter::close() {
  if (!file_) fail(kOp, cat("'", path_, "' is already closed"));
  if (next_ != entries_.size())
    fail(kOp, cat("'", path_, "': closed before tensor '", entries_[next_].name, "' was complete"));
  const int flushed = std::fflush(file_), closed = std::fclose(file_);
  file_ = nullptr;
  const std::string tmp = path_ + ".tmp";
  std::error_code ec;
  if (flushed != 0 || closed != 0) {
    std::filesystem::remove(tmp, ec);
    fail(kOp, cat("write error on '", tmp, "'"));
  }
  std::filesystem::rename(tmp, path_, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    fail(kOp, cat("cannot rename '", tmp, "' to '", path_, "': ", ec.message()));
  }
}

}  // namespace octet::cli
