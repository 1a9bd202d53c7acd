// Streaming reads and writes of safetensors files for the checkpoint conversions.
// - ChunkReader reads a tensor whole or in chunks of consecutive elements with pread on one
//   open file, the next chunk on a helper thread while the caller converts this one; every read
//   is checked (a file that shrank since its index was read is an error naming it).
// - PlannedWriter writes a file whose tensors (names, dtypes, shapes) are known before their
//   values: the header goes first, then each tensor's bytes (whole or in parts, in the planned
//   order) straight into `path`.tmp, and close() renames it onto `path`. One write of the data
//   (SafetensorsWriter, which cannot know the header in advance, writes it twice). Anything
//   that differs from the plan is an octet::Error; without a successful close() the destructor
//   removes the temporary file and `path` is untouched.
// Converting in chunks keeps the memory a few chunks (and the data in the caches between the
// read, the conversion and the write) whatever the tensor sizes.
#pragma once
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "octet/octet.hpp"

namespace octet::cli {

class ChunkReader {
 public:
  ChunkReader(std::string path, const SafetensorsIndex& index);
  ~ChunkReader();
  ChunkReader(const ChunkReader&) = delete;
  ChunkReader& operator=(const ChunkReader&) = delete;

  Tensor whole(const SafetensorsEntry& e) const;  // on the host, e's dtype and shape
  // fn(part, first) for consecutive parts of entry e (1-D host tensors of e's dtype, at most
  // `chunk` elements, starting at element `first`); nothing for an empty tensor.
  void for_each_chunk(const SafetensorsEntry& e, int64_t chunk,
                      const std::function<void(const Tensor& part, int64_t first)>& fn) const;

 private:
  void read_into(const SafetensorsEntry& e, int64_t first, const Tensor& t) const;  // t.numel() elements from `first`
  std::string path_;
  const SafetensorsIndex& index_;
  int fd_ = -1;
};

class PlannedWriter {
 public:
  // entries: name, dtype and shape of every tensor in writing order (offsets are computed).
  PlannedWriter(std::string path, std::vector<SafetensorsEntry> entries, const Metadata& metadata);
  ~PlannedWriter();
  PlannedWriter(const PlannedWriter&) = delete;
  PlannedWriter& operator=(const PlannedWriter&) = delete;

  void add(const std::string& name, const Tensor& t);  // the whole next planned tensor
  // The next bytes of planned tensor `name` (t of its dtype, any shape); the tensor is complete
  // when its planned bytes are written.
  void add_part(const std::string& name, const Tensor& t);
  void close();

 private:
  std::string path_;
  std::vector<SafetensorsEntry> entries_;
  size_t next_ = 0;
  uint64_t written_ = 0;  // bytes of entries_[next_] written so far
  std::FILE* file_ = nullptr;
};

}  // namespace octet::cli
