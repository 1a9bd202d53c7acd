// Devices: the CPU and CUDA GPUs (cuda:N). A GPU is never required: cuda_device_count() is 0
// on a machine without a driver, and any op asked to run on cuda:N there throws octet::Error.
#pragma once
#include <cstdint>
#include <string>

namespace octet {

struct Device {
  enum class Kind : uint8_t { cpu, cuda };
  Kind kind = Kind::cpu;
  int index = 0;

  static Device cpu() { return {Kind::cpu, 0}; }
  static Device cuda(int index = 0) { return {Kind::cuda, index}; }
  // "cpu", "cuda", "cuda:1"; throws octet::Error on anything else.
  static Device parse(const std::string& name);

  bool is_cpu() const { return kind == Kind::cpu; }
  bool is_cuda() const { return kind == Kind::cuda; }
  std::string str() const;  // "cpu" or "cuda:N"
  friend bool operator==(const Device&, const Device&) = default;
};

int cuda_device_count() noexcept;  // 0 when no driver or no GPU
inline bool cuda_available() noexcept { return cuda_device_count() > 0; }
// cuda:0 when a GPU is present, otherwise the CPU.
Device default_device() noexcept;

}  // namespace octet
