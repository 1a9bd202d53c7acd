// PlannedWriter: writes a safetensors file whose tensors (names, dtypes, shapes) are known before
// their values, as in the checkpoint conversions: the header goes first, then each tensor's
// bytes straight into `path`.tmp in the planned order, and close() renames it onto `path`. One
// write of the data (SafetensorsWriter, which cannot know the header in advance, writes it
// twice). A tensor that differs from the plan, out of order, or a close() before every tensor
// was added is an octet::Error; without a successful close() the destructor removes the
// temporary file and `path` is untouched.
#pragma once
#include <cstdio>
#include <string>
#include <vector>

#include "octet/octet.hpp"

namespace octet::cli {

class PlannedWriter {
 public:
  // entries: name, dtype and shape of every tensor in writing order (offsets are computed).
  PlannedWriter(std::string path, std::vector<SafetensorsEntry> entries, const Metadata& metadata);
  ~PlannedWriter();
  PlannedWriter(const PlannedWriter&) = delete;
  PlannedWriter& operator=(const PlannedWriter&) = delete;

  void add(const std::string& name, const Tensor& t);  // the next planned tensor
  void close();
  uint64_t data_bytes() const { return offset_; }

 private:
  std::string path_;
  std::vector<SafetensorsEntry> entries_;
  size_t next_ = 0;
  uint64_t offset_ = 0;
  std::FILE* file_ = nullptr;
};

}  // namespace octet::cli
