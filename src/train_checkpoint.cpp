// Training checkpoints (train_checkpoint.hpp): one safetensors file, prefixed names for the
// parts, the scalars as metadata. Atomicity comes from save_safetensors; this file maps the
// parts to names and checks a loaded file completely before handing anything out.
#include "octet/train_checkpoint.hpp"

#include <charconv>
#include <utility>

#include "octet/autograd.hpp"

namespace octet {
namespace {

constexpr const char* kFormatKey = "octet.training";
constexpr const char* kFormat = "1";

struct Part {
  const char* prefix;
  TensorMap TrainingCheckpoint::*tensors;
};
constexpr Part kParts[] = {{"param/", &TrainingCheckpoint::parameters},
                           {"optim/", &TrainingCheckpoint::optimizer},
                           {"clip/", &TrainingCheckpoint::clip}};

bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

uint64_t parse_u64(const std::string& path, const Metadata& meta, const char* key) {
  const auto it = meta.find(key);
  if (it == meta.end())
    fail("load_training_checkpoint", cat("file '", path, "': metadata '", key, "' is missing"));
  uint64_t value = 0;
  const char* begin = it->second.data();
  const char* end = begin + it->second.size();
  const auto [ptr, ec] = std::from_chars(begin, end, value);
  if (ec != std::errc() || ptr != end || it->second.empty())
    fail("load_training_checkpoint",
         cat("file '", path, "': metadata '", key, "' is not a non-negative integer (got '", it->second, "')"));
  return value;
}

}  // namespace

void save_training_checkpoint(const std::string& path, const TrainingCheckpoint& c) {
  const char* op = "save_training_checkpoint";
  if (c.step < 0) fail_arg(op, "checkpoint.step", "a step >= 0", cat(c.step));
  TensorMap all;
  for (const Part& part : kParts)
    for (const auto& [name, t] : c.*part.tensors) {
      if (name.empty()) fail_arg(op, cat(part.prefix, "<name>"), "a non-empty name", "an empty name");
      if (!t.defined()) fail_arg(op, cat(part.prefix, name), "a defined tensor", "an undefined tensor");
      all.emplace(part.prefix + name, t.detach());
    }
  Metadata meta{{kFormatKey, kFormat},
                {"octet.step", cat(c.step)},
                {"octet.rng.seed", cat(c.rng.seed)},
                {"octet.rng.offset", cat(c.rng.offset)}};
  for (const auto& [key, value] : c.optimizer_metadata) meta.emplace("optim." + key, value);
  for (const auto& [key, value] : c.user) meta.emplace("user." + key, value);
  save_safetensors(path, all, meta);
}

TrainingCheckpoint load_training_checkpoint(const std::string& path, Device device) {
  const char* op = "load_training_checkpoint";
  // The index check covers the file's structure; each tensor is read (and checked) below.
  const SafetensorsIndex index = read_safetensors_index(path);
  const auto format = index.metadata.find(kFormatKey);
  if (format == index.metadata.end())
    fail(op, cat("file '", path, "' is not an octet training checkpoint (no '", kFormatKey, "' metadata)"));
  if (format->second != kFormat)
    fail(op, cat("file '", path, "': format version '", format->second, "', this octet reads '", kFormat, "'"));
  TrainingCheckpoint c;
  const uint64_t step = parse_u64(path, index.metadata, "octet.step");
  if (step > uint64_t(INT64_MAX)) fail(op, cat("file '", path, "': step ", step, " is out of range"));
  c.step = static_cast<int64_t>(step);
  c.rng.seed = parse_u64(path, index.metadata, "octet.rng.seed");
  c.rng.offset = parse_u64(path, index.metadata, "octet.rng.offset");
  for (const auto& [key, value] : index.metadata) {
    if (starts_with(key, "optim.")) c.optimizer_metadata.emplace(key.substr(6), value);
    else if (starts_with(key, "user.")) c.user.emplace(key.substr(5), value);
  }
  for (const SafetensorsEntry& e : index.entries) {
    bool placed = false;
    for (const Part& part : kParts)
      if (starts_with(e.name, part.prefix) && e.name.size() > std::char_traits<char>::length(part.prefix)) {
        (c.*part.tensors).emplace(e.name.substr(std::char_traits<char>::length(part.prefix)),
                                  read_safetensors_tensor(path, index, e, device));
        placed = true;
        break;
      }
    if (!placed) fail(op, cat("file '", path, "': tensor '", e.name, "' belongs to no part (param/, optim/, clip/)"));
  }
  return c;
}

void check_restorable(const char* what, const TensorMap& saved, const TensorMap& live) {
  const char* op = "check_restorable";
  for (const auto& [name, t] : live) {
    const auto it = saved.find(name);
    if (it == saved.end()) fail(op, cat(what, ": '", name, "' is not in the checkpoint"));
    if (!t.defined()) fail_arg(op, cat(what, " '", name, "'"), "a defined live tensor", "an undefined tensor");
    if (it->second.shape() != t.shape() || it->second.dtype() != t.dtype())
      fail(op, cat(what, ": '", name, "' is ", dtype_name(it->second.dtype()), shape_str(it->second.shape()),
                   " in the checkpoint but ", dtype_name(t.dtype()), shape_str(t.shape()), " in the live model"));
  }
  for (const auto& [name, t] : saved)
    if (!live.count(name)) fail(op, cat(what, ": the checkpoint holds '", name, "', which the live model lacks"));
}

void restore_tensors(const char* what, const TensorMap& saved, const TensorMap& live) {
  check_restorable(what, saved, live);
  NoGradGuard no_grad;
  for (const auto& [name, t] : live) {
    Tensor target = t;
    target.copy_(saved.at(name));
  }
}

}  // namespace octet
