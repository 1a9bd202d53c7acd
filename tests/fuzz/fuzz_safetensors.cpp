// libFuzzer target for the safetensors reader (built and run by tools/fuzz-safetensors, not by
// meson). Each input is written to a scratch file and read tensor by tensor; the only allowed
// failure is octet::Error (anything else escapes and libFuzzer reports it). A file that loads
// must survive save_safetensors + load_safetensors unchanged, bit for bit, metadata included.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "octet/io.hpp"

namespace {

std::string scratch(const char* suffix) {
  const char* dir = std::getenv("TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/octet-fuzz-" + std::to_string(::getpid()) + suffix;
}

[[noreturn]] void mismatch(const std::string& what) {
  std::fprintf(stderr, "round trip changed %s\n", what.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string in = scratch(".safetensors"), out = scratch("-rt.safetensors");
  {
    std::ofstream f(in, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  octet::TensorMap m;
  octet::Metadata meta;
  try {
    const octet::SafetensorsIndex index = octet::read_safetensors_index(in);
    for (const auto& e : index.entries) m.emplace(e.name, octet::read_safetensors_tensor(in, index, e));
    meta = index.metadata;
  } catch (const octet::Error&) {
    return 0;
  }
  // Whatever the reader accepts, the writer must write and the reader read back identically.
  octet::save_safetensors(out, m, meta);
  const octet::TensorMap back = octet::load_safetensors(out);
  if (octet::load_safetensors_metadata(out) != meta) mismatch("the metadata");
  if (back.size() != m.size()) mismatch("the tensor count");
  for (const auto& [name, t] : m) {
    const auto it = back.find(name);
    if (it == back.end()) mismatch("a name");
    const octet::Tensor& b = it->second;
    if (b.dtype() != t.dtype() || b.shape() != t.shape() || (t.nbytes() > 0 && std::memcmp(b.data(), t.data(), t.nbytes()) != 0))
      mismatch("tensor '" + name + "'");
  }
  return 0;
}
