// Where octet quantize / dequantize read and write: one safetensors file, or a sharded
// checkpoint (a folder holding model.safetensors.index.json, or that index file itself), which
// is converted shard by shard into an output folder with a rewritten index. Outputs never
// replace an input (the same file also through symbolic or hard links: same device and inode
// when both exist, the same canonical path otherwise) and replace an existing output only when
// the user passed --force. Problems are octet::Error naming the paths given.
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace octet::cli {

inline constexpr const char* kIndexName = "model.safetensors.index.json";

// One file to convert: read `in`, write `out`.
struct FileJob {
  std::string in, out;
};

struct Checkpoint {
  bool sharded = false;
  std::string in_folder, out_folder;  // sharded only
  nlohmann::json index;               // sharded: the input index (checked)
  std::vector<FileJob> files;         // one per shard, in name order (or the single file)
};

// Resolves IN and OUT of a conversion and refuses what it must (see above). A sharded input's
// index must be {"weight_map": {tensor: shard file name}, ...} with plain file names inside
// the folder; the shards' own tensors are checked against it by check_shard().
Checkpoint plan_conversion(const char* op, const std::string& in, const std::string& out, bool force);

// Every tensor of shard `file` is listed for it in the index and every tensor the index lists
// for it is in the file.
void check_shard(const char* op, const Checkpoint& c, const std::string& file, const std::vector<std::string>& names);

// Writes OUT's index: the input index with "weight_map" replaced and metadata.total_size set
// (written to a temporary file and renamed, after all shards).
void write_index(const char* op, const Checkpoint& c, const std::map<std::string, std::string>& weight_map,
                 uint64_t total_size);

bool same_file(const std::string& a, const std::string& b);

}  // namespace octet::cli
