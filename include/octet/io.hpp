// safetensors files: an 8-byte little-endian header length, a JSON header
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}},
// then the raw little-endian tensor bytes. Files are untrusted input: every structural problem
// (truncation, bad JSON, header over 100 MB, offsets outside the data or overlapping, byte counts
// that do not match shape x dtype, duplicate or empty names, unknown dtypes) is an octet::Error
// naming the file, the tensor and the problem. Tensors are read one at a time.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "octet/tensor.hpp"

namespace octet {

using TensorMap = std::map<std::string, Tensor>;
using Metadata = std::map<std::string, std::string>;

struct SafetensorsEntry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin = 0, end = 0;  // byte range inside the data section
};

struct SafetensorsIndex {
  std::vector<SafetensorsEntry> entries;  // sorted by begin offset
  Metadata metadata;
  uint64_t data_start = 0;                // file offset of the data section
};

// Reads and validates the header only.
SafetensorsIndex read_safetensors_index(const std::string& path);
// Reads one tensor of an index onto `device`.
Tensor read_safetensors_tensor(const std::string& path, const SafetensorsIndex& index,
                               const SafetensorsEntry& entry, Device device = Device::cpu());
TensorMap load_safetensors(const std::string& path, Device device = Device::cpu());
Metadata load_safetensors_metadata(const std::string& path);
// Writes tensors in name order (any device; each is copied to the host one at a time).
void save_safetensors(const std::string& path, const TensorMap& tensors, const Metadata& metadata = {});

// "F32", "BF16", "F8_E4M3", ...; parse throws for unknown names.
std::string safetensors_dtype_name(DType t);
DType parse_safetensors_dtype(const std::string& name);

}  // namespace octet
