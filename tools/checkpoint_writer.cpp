// PlannedWriter (checkpoint_writer.hpp): the safetensors header from the plan, then the data.
#include "tools/checkpoint_writer.hpp"

#include <filesystem>
#include <nlohmann/json.hpp>

namespace octet::cli {
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
    header[e.name] = {{"dtype", safetensors_dtype_name(e.dtype)}, {"shape", e.shape}, {"data_offsets", {e.begin, e.end}}};
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

void PlannedWriter::add(const std::string& name, const Tensor& t) {
  if (!file_) fail(kOp, cat("'", path_, "' is already closed"));
  if (next_ >= entries_.size()) fail(kOp, cat("'", path_, "': tensor '", name, "' was not planned"));
  const SafetensorsEntry& e = entries_[next_];
  if (e.name != name || e.dtype != t.dtype() || e.shape != t.shape())
    fail(kOp, cat("'", path_, "': got tensor '", name, "' ", dtype_name(t.dtype()), shape_str(t.shape()), ", planned '",
                  e.name, "' ", dtype_name(e.dtype), shape_str(e.shape)));
  const Tensor host = t.to(Device::cpu());
  write_all(file_, host.data(), host.nbytes(), path_ + ".tmp");
  offset_ += host.nbytes();
  ++next_;
}

void PlannedWriter::close() {
  if (!file_) fail(kOp, cat("'", path_, "' is already closed"));
  if (next_ != entries_.size())
    fail(kOp, cat("'", path_, "': closed after ", next_, " of ", entries_.size(), " planned tensors"));
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
