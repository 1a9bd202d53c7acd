// Input and output paths of the checkpoint conversions (checkpoint_files.hpp).
#include "tools/checkpoint_files.hpp"

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "octet/error.hpp"

namespace octet::cli {
namespace fs = std::filesystem;
using nlohmann::json;

bool same_file(const std::string& a, const std::string& b) {
  struct stat sa {}, sb {};
  if (::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0)
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
  std::error_code ea, eb;
  const fs::path ca = fs::weakly_canonical(a, ea), cb = fs::weakly_canonical(b, eb);
  return !ea && !eb && ca == cb;
}

namespace {

bool exists(const std::string& p) {
  std::error_code ec;
  return fs::exists(fs::symlink_status(p, ec)) && !ec;
}

bool is_folder(const std::string& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}

// The output `out` of input `in`: never the input, and new unless --force.
void check_output(const char* op, const std::string& in, const std::string& out, bool force) {
  if (same_file(in, out)) fail(op, cat("OUT '", out, "' is the input '", in, "' (the same file); choose another OUT"));
  if (is_folder(out)) fail(op, cat("OUT '", out, "' is a folder; give a file name"));
  if (exists(out) && !force) fail(op, cat("OUT '", out, "' exists; pass --force to replace it"));
}

json read_index(const char* op, const std::string& path) {
  std::ifstream f(path);
  if (!f) fail(op, cat("index '", path, "' cannot be read"));
  json j;
  try {
    j = json::parse(f);
  } catch (const json::exception& e) {
    fail(op, cat("index '", path, "' is not valid JSON (", e.what(), ")"));
  }
  const auto map = j.is_object() ? j.find("weight_map") : j.end();
  if (map == j.end() || !map->is_object() || map->empty())
    fail(op, cat("index '", path, "' has no \"weight_map\" object of tensor names and shard files"));
  for (const auto& [name, file] : map->items()) {
    if (!file.is_string())
      fail(op, cat("index '", path, "': tensor '", name, "' maps to ", file.dump(), ", not a file name"));
    const std::string s = file.get<std::string>();
    if (s.empty() || s == "." || s == ".." || s.find('/') != std::string::npos || s == kIndexName)
      fail(op, cat("index '", path, "': tensor '", name, "' maps to '", s,
                   "'; shard files must be plain file names inside the folder"));
  }
  const auto meta = j.find("metadata");
  if (meta != j.end() && !meta->is_object()) fail(op, cat("index '", path, "': \"metadata\" must be an object"));
  return j;
}

}  // namespace

Checkpoint plan_conversion(const char* op, const std::string& in, const std::string& out, bool force) {
  Checkpoint c;
  std::string index_path;
  if (is_folder(in)) {
    index_path = (fs::path(in) / kIndexName).string();
    if (!exists(index_path))
      fail(op, cat("IN '", in, "' is a folder without ", kIndexName, " (a sharded checkpoint needs one)"));
    c.in_folder = in;
  } else if (in.size() >= 11 && in.compare(in.size() - 11, 11, ".index.json") == 0) {
    index_path = in;
    c.in_folder = fs::path(in).parent_path().string();
    if (c.in_folder.empty()) c.in_folder = ".";
  }
  if (index_path.empty()) {
    check_output(op, in, out, force);
    c.files.push_back({in, out});
    return c;
  }
  c.sharded = true;
  c.out_folder = out;
  c.index = read_index(op, index_path);
  if (same_file(c.in_folder, out))
    fail(op, cat("OUT '", out, "' is the input folder '", c.in_folder, "'; choose another folder"));
  if (exists(out) && !is_folder(out))
    fail(op, cat("OUT '", out, "' is a file; a sharded checkpoint is written into a folder"));
  std::set<std::string> shards;
  for (const auto& [name, file] : c.index["weight_map"].items()) shards.insert(file.get<std::string>());
  for (const auto& s : shards) {
    const std::string src = (fs::path(c.in_folder) / s).string(), dst = (fs::path(out) / s).string();
    if (!exists(src))
      fail(op, cat("index '", index_path, "' lists shard '", s, "', which is not in '", c.in_folder, "'"));
    check_output(op, src, dst, force);
    c.files.push_back({src, dst});
  }
  const std::string out_index = (fs::path(out) / kIndexName).string();
  check_output(op, index_path, out_index, force);
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) fail(op, cat("cannot create the folder '", out, "': ", ec.message()));
  return c;
}

void check_shard(const char* op, const Checkpoint& c, const std::string& file, const std::vector<std::string>& names) {
  if (!c.sharded) return;
  const std::string shard = fs::path(file).filename().string();
  const json& map = c.index.at("weight_map");
  std::set<std::string> listed;
  for (const auto& [name, f] : map.items())
    if (f.get<std::string>() == shard) listed.insert(name);
  for (const auto& n : names) {
    const auto it = map.find(n);
    if (it == map.end()) fail(op, cat("file '", file, "': tensor '", n, "' is not in the index's weight_map"));
    if (it->get<std::string>() != shard)
      fail(op, cat("file '", file, "': tensor '", n, "' is listed in the index for '", it->get<std::string>(), "'"));
    listed.erase(n);
  }
  if (!listed.empty())
    fail(op, cat("file '", file, "' lacks tensor '", *listed.begin(), "', which the index lists for it"));
}

void write_index(const char* op, const Checkpoint& c, const std::map<std::string, std::string>& weight_map,
                 uint64_t total_size) {
  json j = c.index;
  j["weight_map"] = weight_map;
  j["metadata"]["total_size"] = total_size;
  const std::string path = (fs::path(c.out_folder) / kIndexName).string(), tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << j.dump(2) << "\n";
    f.close();
    if (!f) fail(op, cat("cannot write '", tmp, "'"));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) fail(op, cat("cannot rename '", tmp, "' to '", path, "': ", ec.message()));
}

}  // namespace octet::cli
