// safetensors files: an 8-byte little-endian header length, a JSON header
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}},
// then the raw little-endian tensor bytes. Files are untrusted input: every structural problem
// (truncation, bad JSON, header over 100 MB, duplicate keys at any level, empty names, unknown
// dtypes, shapes over 64 dimensions or 2^48 elements, offsets outside the data or overlapping,
// byte counts that do not match shape x dtype, metadata values that are not strings) is an
// octet::Error "<function>: file '<path>': tensor '<name>': <problem>". docs/checkpoints.md has
// the format and the full list. Tensors are read one at a time; nothing holds the whole file.
#pragma once
#include <cstdint>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "octet/tensor.hpp"

namespace octet {

using TensorMap = std::map<std::string, Tensor>;
using Metadata = std::map<std::string, std::string>;

struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::u8;
  Shape shape;
  uint64_t begin = 0, end = 0;  // byte range inside the data section
};

struct SafetensorsIndex {
  std::vector<SafetensorsEntry> entries;  // sorted by begin offset
  Metadata metadata;
  uint64_t data_start = 0;                // file offset of the data section
  const SafetensorsEntry* find(const std::string& name) const;  // nullptr when absent
};

// Reads and validates the header only.
SafetensorsIndex read_safetensors_index(const std::string& path);
// Reads one tensor of an index onto `device` (checks the entry again: it may have been edited).
Tensor read_safetensors_tensor(const std::string& path, const SafetensorsIndex& index,
                               const SafetensorsEntry& entry, Device device = Device::cpu());
TensorMap load_safetensors(const std::string& path, Device device = Device::cpu());
Metadata load_safetensors_metadata(const std::string& path);
// Writes tensors in name order (any device; each is copied to the host one at a time) to a
// temporary `path`.<pid>-<n>.tmp, flushes it to the disk (fsync), renames it onto `path` and
// flushes the folder: `path` holds either its old content or the whole new file, also after a
// crash. A failed write (disk full, file-size limit, I/O error, folder missing or read-only)
// throws an Error with the system's reason, removes the temporary and leaves `path` as it was.
// A process killed during a save can leave its temporary behind (never read by octet).
// Names must be non-empty, not "__metadata__", valid UTF-8.
void save_safetensors(const std::string& path, const TensorMap& tensors, const Metadata& metadata = {});

// Streams tensors into a safetensors file one at a time, for files larger than memory: add()
// appends each tensor's bytes to a side file `path`.<pid>-<n>.data.tmp; close() writes the
// header and the data to a temporary and renames it onto `path` as save_safetensors does. Peak
// memory: one tensor (plus its host copy); costs one extra copy of the data on disk. Without a
// successful close() the destructor removes the temporary files and `path` is untouched.
class SafetensorsWriter {
 public:
  explicit SafetensorsWriter(std::string path);
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  void add(const std::string& name, const Tensor& t);  // unique, valid names (as save_safetensors)
  void set_metadata(const std::string& key, const std::string& value);
  void close();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::string data_path_;  // the side file
  std::ofstream data_;
  std::vector<SafetensorsEntry> entries_;  // in add() order, offsets in the side file
  std::set<std::string> names_;
  Metadata metadata_;
  uint64_t offset_ = 0;
  bool closed_ = false;
};

// "F32", "BF16", "F8_E4M3", ...; parse throws for unknown names.
std::string safetensors_dtype_name(DType t);
DType parse_safetensors_dtype(const std::string& name);

}  // namespace octet
