// How octet stores a quantized tensor in a safetensors checkpoint (docs/checkpoints.md): tensor T
// becomes T (u8 codes, T's shape), T.absmax (f32 [blocks], or u8 codes when nested, with
// T.absmax.offset f32 [], T.absmax.absmax f32, T.absmax.code f32 [256]) and T.code (f32 [256]);
// header metadata "octet.T" holds {"blocksize", "dtype", "nested", "code"}. Reading checks
// everything against the file; problems are octet::Error naming the file and tensor.
#pragma once
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "octet/octet.hpp"

namespace octet::cli {

inline constexpr const char* kQuantPrefix = "octet.";

// The dtypes octet quantize converts (f64 goes through f32).
bool quantizable(DType t);

// What "octet.T" records about a quantized tensor T.
struct QuantInfo {
  int64_t blocksize = 0;  // 0: global
  DType dtype = DType::f32;
  bool nested = false;
  std::string code;

  std::string to_json() const;
  std::vector<std::string> state_names(const std::string& t) const;  // the state tensors stored next to T
};

// The tensors stored for quantized tensor `name`, in writing order: codes first, then the state.
std::vector<std::pair<std::string, Tensor>> stored_tensors(const std::string& name, const Quantized& q);
// Their names, dtypes and shapes, known before quantizing (for the output's header).
std::vector<SafetensorsEntry> stored_layout(const std::string& name, const Shape& shape, int64_t blocksize,
                                            bool nested);

// The quantized tensors of a file (from its "octet.*" metadata), each checked against the index,
// and the names of their state tensors (each owned by exactly one quantized tensor).
struct QuantizedFile {
  std::map<std::string, QuantInfo> tensors;
  std::set<std::string> state;
};
QuantizedFile quantized_of(const char* op, const std::string& path, const SafetensorsIndex& index);

// Restores the floats of quantized tensor t exactly as dequantize / dequantize_blockwise give them.
Tensor restore(const char* op, const std::string& path, const SafetensorsIndex& index, const std::string& t,
               const QuantInfo& q, Device dev);

}  // namespace octet::cli
