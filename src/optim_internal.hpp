// The state behind octet::optim::Optimizer, shared by src/optim.cpp (construction, validation,
// step) and src/optim_state.cpp (state_dict, load_state_dict, memory).
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "kernels/optim.cuh"
#include "octet/clip.hpp"
#include "octet/optim.hpp"

namespace octet::optim {

struct ParamState {
  Tensor param;
  size_t group = 0;
  Tensor step_state;        // i64 [8]: optim_math::StepState
  Tensor state1, state2;    // AdamW: m, v; AdamW8bit: u8 codes or f32 m, v; SGD: f32 momentum buffer or none
  Tensor absmax1, absmax2;  // AdamW8bit blockwise: f32 per block of kernels::kOptimBlock
  bool blockwise = false;
  bool clipped = false;  // percentile clipping on
  ClipState clip;
  Tensor clip_partials;  // f64 scratch of the clipping kernels (CUDA, large gradients)
};

struct GroupState {
  Hyperparameters h;
  Tensor hyper;  // f64 [kHyperCount] on the device
  std::vector<Tensor> params;
  std::vector<size_t> members;  // indices into Impl::params
};

struct Optimizer::Impl {
  Algorithm algorithm = Algorithm::sgd;
  std::string name;  // "optim::AdamW", ... (error messages)
  Device device = Device::cpu();
  int percentile = 100;
  DType state_dtype = DType::f32;
  int64_t min_8bit_size = 4096;
  std::vector<GroupState> groups;
  std::vector<ParamState> params;
  Tensor tables;              // u8 on the device (AdamW8bit): kernels::OptimTables, then the compact tables' entries
  kernels::OptimIndex index;  // pointers into `tables`

  // Throws naming `op`/`arg` unless h is valid for the algorithm.
  void validate(std::string_view op, std::string_view arg, const Hyperparameters& h) const;
  void write_hyper(size_t group);      // the group's device copy of h (enqueued; no wait)
  void ensure_momentum(size_t group);  // SGD: momentum buffers for the group's parameters when momentum != 0
  void build_index();                  // AdamW8bit: `tables` and `index` on the device
};

// Hyperparameters as a row of names and values (state_dict metadata, write_hyper).
inline constexpr const char* kHyperNames[optim_math::kHyperCount] = {"lr",  "weight_decay", "beta1",     "beta2",
                                                                     "eps", "momentum",     "dampening", "nesterov"};
kernels::HyperValues hyper_values(const Hyperparameters& h);
Hyperparameters from_hyper_values(const kernels::HyperValues& v);

}  // namespace octet::optim
