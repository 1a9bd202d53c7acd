// octet::optim: SGD, AdamW and 8-bit AdamW (Adam8bit) over parameter groups, with bitsandbytes'
// percentile clipping built in, one fused pass per tensor and a multi-tensor launch on CUDA.
// docs/optim.md has the formulas, the differences from torch and bitsandbytes, memory per
// parameter and how to capture a step in a CUDA graph.
// Contract:
// - Parameters: f32, f16 or bf16 tensors, all on one device, each in one group; a parameter
//   may not appear twice. Every state is allocated by the constructor (zeros), so step() never
//   allocates. A parameter's gradient must have its dtype, shape and device; parameters without a
//   gradient are skipped (their step counters do not advance); empty tensors are legal.
// - step() updates every parameter with a gradient in place (Storage::version advances, as for
//   any in-place op; gradients are only read, also with percentile clipping) and never waits for
//   the device. On CUDA it runs on octet::current_stream: per group of up to 256
//   tensors of one kind, one launch advances the step counters, one launch updates all elements
//   (with percentile clipping: one or two more launches per parameter first). The step counters
//   and hyperparameters live on the device, so a step captured in a CUDA graph replays correctly:
//   change hyperparameters between replays with the setters (which enqueue a write of the device
//   copy on the current stream), never inside a capture you replay.
// - CPU and CUDA give the same bits (f32, f16 and bf16 parameters, all state kinds) without
//   percentile clipping: both devices evaluate the same float operations in the same order
//   (kernels/optim_math.cuh). With it, each device's clipping scale is percentile_clipping's
//   there, which agree to rounding (clip.hpp), so the parameters agree closely.
// - Errors: octet::Error naming the function, the argument, what was expected and what was given
//   (lr < 0 or non-finite, betas outside [0, 1), eps <= 0 or non-finite, weight decay or
//   momentum non-finite or < 0, dampening non-finite, percentile outside [1, 100], parameters on different
//   devices or of an unsupported dtype, a gradient of another dtype, shape or device, a state file
//   of another optimizer, parameter layout or format).
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "octet/io.hpp"
#include "octet/tensor.hpp"

namespace octet::optim {

// Every optimizer's hyperparameters; each algorithm reads its own (docs/optim.md).
struct Hyperparameters {
  double lr = 1e-3;
  double weight_decay = 0.0;
  double beta1 = 0.9, beta2 = 0.999;  // AdamW, AdamW8bit
  double eps = 1e-8;                  // AdamW, AdamW8bit
  double momentum = 0.0;              // SGD
  double dampening = 0.0;             // SGD
  bool nesterov = false;              // SGD (needs momentum > 0 and dampening 0)
};

// A group of parameters; lr and weight_decay, when set, override the optimizer's values.
struct ParamGroup {
  std::vector<Tensor> params;
  std::optional<double> lr;
  std::optional<double> weight_decay;
};

enum class Algorithm { sgd, adamw, adamw8bit };
std::string algorithm_name(Algorithm a);  // "sgd", "adamw", "adamw8bit"

struct Options {
  Hyperparameters defaults;
  // bitsandbytes' percentile_clipping: 100 = off; P in [1, 99]: each parameter keeps a 100-step
  // history of its gradient norm (a ClipState) and its gradient is scaled by
  // percentile_clipping(grad, history, P).scale inside the update (the gradient is not written).
  int percentile_clipping = 100;
  DType state_dtype = DType::f32;  // AdamW: f32 or bf16 (round to nearest even)
  int64_t min_8bit_size = 4096;    // AdamW8bit: smaller tensors keep f32 states
};

// What state_dict() gives and load_state_dict() takes: tensors "param.<i>.<name>" (<i> the
// parameter's position over all groups in order) and the hyperparameters and layout as metadata.
struct StateDict {
  TensorMap tensors;  // on the host
  Metadata metadata;
};

class Optimizer {
 public:
  Optimizer(Algorithm algorithm, std::vector<ParamGroup> groups, const Options& options);
  virtual ~Optimizer();
  Optimizer(Optimizer&&) noexcept;  // the moved-from optimizer may only be destroyed or assigned
  Optimizer& operator=(Optimizer&&) noexcept;

  void step();       // one update of every parameter that has a gradient
  void zero_grad();  // drops every parameter's gradient

  Algorithm algorithm() const;
  Device device() const;
  size_t group_count() const;
  const std::vector<Tensor>& params(size_t group) const;
  const Hyperparameters& hyperparameters(size_t group) const;
  // Validates, keeps the values and enqueues a write of the group's device copy (no wait).
  void set_hyperparameters(size_t group, const Hyperparameters& h);
  void set_lr(size_t group, double lr);
  void set_lr(double lr);  // every group
  // The group's hyperparameters as the kernels read them: f64 [8] on the device (lr, weight_decay,
  // beta1, beta2, eps, momentum, dampening, nesterov). A device-side schedule may write lr (element
  // 0) itself; hyperparameters() then no longer tells the value in use.
  Tensor hyperparameter_tensor(size_t group) const;

  // Bytes of device (or host) memory the optimizer holds: states, absmax, step counters,
  // clipping histories and hyperparameters.
  size_t state_bytes() const;
  // Updates done so far on the parameter at `index` (all groups in order). Waits for the device.
  int64_t steps(size_t index) const;

  // The state as host tensors plus metadata; load_state_dict validates everything (algorithm,
  // parameter count, shapes, dtypes, state format, hyperparameters) before it writes anything.
  StateDict state_dict() const;
  void load_state_dict(const StateDict& state);
  void save(const std::string& path) const;  // state_dict() to a safetensors file
  void load(const std::string& path);        // load_state_dict() from a safetensors file

  struct Impl;

 private:
  Impl& impl() const;  // throws for a moved-from optimizer
  std::unique_ptr<Impl> impl_;
};

// torch.optim.SGD: lr, momentum, dampening, nesterov, weight_decay.
struct SGDOptions {
  double lr = 1e-3, momentum = 0.0, dampening = 0.0, weight_decay = 0.0;
  bool nesterov = false;
  int percentile_clipping = 100;
};
class SGD : public Optimizer {
 public:
  SGD(std::vector<ParamGroup> groups, const SGDOptions& options = {});
  SGD(const std::vector<Tensor>& params, const SGDOptions& options = {});
};

// torch.optim.AdamW: decoupled weight decay first, then the bias-corrected Adam step.
struct AdamWOptions {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 1e-2;
  int percentile_clipping = 100;
  DType state_dtype = DType::f32;  // f32 or bf16
};
class AdamW : public Optimizer {
 public:
  AdamW(std::vector<ParamGroup> groups, const AdamWOptions& options = {});
  AdamW(const std::vector<Tensor>& params, const AdamWOptions& options = {});
};

// bitsandbytes' AdamW8bit (blockwise 8-bit states, blocksize 256); Adam8bit: the same with weight
// decay 0 (options.weight_decay is ignored; a group's own weight_decay still applies).
struct AdamW8bitOptions {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 1e-2;
  int percentile_clipping = 100;
  int64_t min_8bit_size = 4096;
};
class AdamW8bit : public Optimizer {
 public:
  AdamW8bit(std::vector<ParamGroup> groups, const AdamW8bitOptions& options = {});
  AdamW8bit(const std::vector<Tensor>& params, const AdamW8bitOptions& options = {});
};
class Adam8bit : public AdamW8bit {
 public:
  Adam8bit(std::vector<ParamGroup> groups, AdamW8bitOptions options = {});
  Adam8bit(const std::vector<Tensor>& params, AdamW8bitOptions options = {});
};

// torch.nn.utils.clip_grad_norm_: the 2-norm over every gradient of `params` (parameters without
// one are skipped; all on one device), then each gradient *= min(1, max_norm / (norm + 1e-6))
// in place. Returns the norm as an f32 [] tensor on the device; nothing waits. The sum runs in a
// fixed order in f64: the same bits on both devices and every run. max_norm: finite, > 0.
Tensor clip_grad_norm_(const std::vector<Tensor>& params, double max_norm);

}  // namespace octet::optim
