// The optimizer's state as data (include/octet/optim.hpp): state_bytes, steps, state_dict and
// load_state_dict (and their safetensors files). Names: "param.<i>.step" (i64 []), then per
// algorithm "param.<i>.exp_avg" / "param.<i>.exp_avg_sq" (AdamW: state dtype; AdamW8bit below
// min_8bit_size: f32), or for AdamW8bit's blockwise states "param.<i>.exp_avg.codes" (u8, the
// parameter's shape) and "param.<i>.exp_avg.absmax" (f32 [blocks]) and the same for exp_avg_sq,
// "param.<i>.momentum_buffer" (SGD, f32, when momentum was ever on), and with percentile clipping
// "param.<i>.clip.gnorm_vec" (f32 [100]) and "param.<i>.clip.step" (i64 []). Metadata: optimizer,
// format, layout (groups, sizes, shapes, dtypes), options and every group's hyperparameters
// (printed with 17 significant digits, so they read back to the same doubles).
// load_state_dict checks every name, dtype, shape and metadata value first and only then writes.
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "octet/autograd.hpp"
#include "src/check.hpp"
#include "src/optim_internal.hpp"

namespace octet::optim {
namespace {

constexpr const char* kFormat = "1";

std::string number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

std::string prefix(size_t i) { return cat("param.", i, "."); }

// The tensors the state holds, by name, as the live (device) tensors.
TensorMap live_tensors(const Optimizer::Impl& I) {
  TensorMap out;
  for (size_t i = 0; i < I.params.size(); ++i) {
    const ParamState& ps = I.params[i];
    const std::string pre = prefix(i);
    if (ps.blockwise) {
      out[pre + "exp_avg.codes"] = ps.state1;
      out[pre + "exp_avg.absmax"] = ps.absmax1;
      out[pre + "exp_avg_sq.codes"] = ps.state2;
      out[pre + "exp_avg_sq.absmax"] = ps.absmax2;
    } else if (I.algorithm == Algorithm::sgd) {
      if (ps.state1.defined()) out[pre + "momentum_buffer"] = ps.state1;
    } else {
      out[pre + "exp_avg"] = ps.state1;
      out[pre + "exp_avg_sq"] = ps.state2;
    }
    if (ps.clipped) {
      out[pre + "clip.gnorm_vec"] = ps.clip.gnorm_vec;
      out[pre + "clip.step"] = ps.clip.step;
    }
  }
  return out;
}

Metadata layout(const Optimizer::Impl& I) {
  Metadata m;
  m["octet.optimizer"] = algorithm_name(I.algorithm);
  m["octet.optimizer_format"] = kFormat;
  m["percentile_clipping"] = cat(I.percentile);
  m["state_dtype"] = std::string(dtype_name(I.state_dtype));
  m["min_8bit_size"] = cat(I.min_8bit_size);
  m["group_count"] = cat(I.groups.size());
  m["param_count"] = cat(I.params.size());
  for (size_t g = 0; g < I.groups.size(); ++g) m[cat("group.", g, ".size")] = cat(I.groups[g].members.size());
  for (size_t i = 0; i < I.params.size(); ++i) {
    m[prefix(i) + "shape"] = shape_str(I.params[i].param.shape());
    m[prefix(i) + "dtype"] = std::string(dtype_name(I.params[i].param.dtype()));
  }
  return m;
}

double parse_number(std::string_view op, const std::string& key, const std::string& text) {
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size() || errno == ERANGE)
    fail_arg(op, cat("metadata '", key, "'"), "a number", cat("'", text, "'"));
  return v;
}

}  // namespace

size_t Optimizer::state_bytes() const {
  const Impl& I = impl();
  size_t bytes = I.tables.defined() ? I.tables.nbytes() : 0;
  for (const GroupState& g : I.groups) bytes += g.hyper.nbytes();
  for (const ParamState& ps : I.params) {
    bytes += ps.step_state.nbytes();
    for (const Tensor* t : {&ps.state1, &ps.state2, &ps.absmax1, &ps.absmax2, &ps.clip_partials})
      if (t->defined()) bytes += t->nbytes();
    if (ps.clipped)  // the three result scalars share one f32 [3]
      bytes += ps.clip.gnorm_vec.nbytes() + ps.clip.step.nbytes() + 3 * sizeof(float);
  }
  return bytes;
}

int64_t Optimizer::steps(size_t index) const {
  const Impl& I = impl();
  if (index >= I.params.size())
    fail_arg(cat(I.name, "::steps"), "index", cat("a parameter index below ", I.params.size()), cat(index));
  return I.params[index].step_state.to_vector<int64_t>()[0];
}

StateDict Optimizer::state_dict() const {
  const Impl& I = impl();
  StateDict out;
  out.metadata = layout(I);
  for (size_t g = 0; g < I.groups.size(); ++g) {
    const kernels::HyperValues v = hyper_values(I.groups[g].h);
    for (int k = 0; k < optim_math::kHyperCount; ++k)
      out.metadata[cat("group.", g, ".", kHyperNames[k])] = number(v.v[k]);
  }
  for (const auto& [name, t] : live_tensors(I)) out.tensors[name] = t.to(Device::cpu());
  for (size_t i = 0; i < I.params.size(); ++i)
    out.tensors[prefix(i) + "step"] = Tensor::from_vector(std::vector<int64_t>{steps(i)}, Shape{});
  return out;
}

void Optimizer::load_state_dict(const StateDict& state) {
  Impl& I = impl();
  const std::string op = cat(I.name, "::load_state_dict");
  // Layout and options: every key of this optimizer's layout must match exactly.
  for (const auto& [key, expected] : layout(I)) {
    const auto it = state.metadata.find(key);
    if (it == state.metadata.end())
      fail_arg(op, "state", cat("metadata '", key, "' = '", expected, "'"), "no such metadata");
    if (it->second != expected)
      fail_arg(op, cat("metadata '", key, "'"), cat("'", expected, "' (this optimizer)"), cat("'", it->second, "'"));
  }
  std::vector<Hyperparameters> hypers;
  for (size_t g = 0; g < I.groups.size(); ++g) {
    kernels::HyperValues v{};
    for (int k = 0; k < optim_math::kHyperCount; ++k) {
      const std::string key = cat("group.", g, ".", kHyperNames[k]);
      const auto it = state.metadata.find(key);
      if (it == state.metadata.end()) fail_arg(op, "state", cat("metadata '", key, "'"), "no such metadata");
      v.v[k] = parse_number(op, key, it->second);
    }
    hypers.push_back(from_hyper_values(v));
    I.validate(op, cat("metadata 'group.", g, "'"), hypers.back());
  }
  // Tensors: the live set (momentum buffers may be new) plus the step counters, nothing else.
  TensorMap expected = live_tensors(I);
  for (size_t i = 0; i < I.params.size(); ++i) {
    const std::string buf = prefix(i) + "momentum_buffer";
    if (I.algorithm == Algorithm::sgd && !expected.count(buf) && state.tensors.count(buf))
      expected[buf] = Tensor::empty(I.params[i].param.shape(), DType::f32, Device::cpu());
  }
  for (size_t i = 0; i < I.params.size(); ++i)
    expected[prefix(i) + "step"] = Tensor::empty({}, DType::i64, Device::cpu());
  for (const auto& [name, t] : state.tensors)
    if (!expected.count(name)) fail_arg(op, "state", "only this optimizer's tensors", cat("tensor '", name, "'"));
  for (const auto& [name, live] : expected) {
    const auto it = state.tensors.find(name);
    // a momentum buffer that the file lacks starts from zero
    if (it == state.tensors.end() && name.find("momentum_buffer") != std::string::npos) continue;
    if (it == state.tensors.end()) fail_arg(op, "state", cat("tensor '", name, "'"), "no such tensor");
    check::dtype_is(op, cat("tensor '", name, "'"), it->second, live.dtype());
    check::shape_is(op, cat("tensor '", name, "'"), it->second, live.shape());
  }
  for (size_t i = 0; i < I.params.size(); ++i) {
    const std::string name = prefix(i) + "step";
    const int64_t step = state.tensors.at(name).to_vector<int64_t>()[0];
    if (step < 0) fail_arg(op, cat("tensor '", name, "'"), "a step >= 0", cat(step));
  }
  for (size_t i = 0; i < I.params.size(); ++i) {
    const std::string name = prefix(i) + "clip.step";
    const auto it = state.tensors.find(name);
    if (it != state.tensors.end() && it->second.to_vector<int64_t>()[0] < 1)
      fail_arg(op, cat("tensor '", name, "'"), "a clipping step >= 1", cat(it->second.to_vector<int64_t>()[0]));
  }

  // Everything checked: write.
  NoGradGuard no_grad;
  for (size_t g = 0; g < I.groups.size(); ++g) {
    I.groups[g].h = hypers[g];
    I.write_hyper(g);
    I.ensure_momentum(g);
  }
  for (size_t i = 0; i < I.params.size(); ++i) {
    ParamState& ps = I.params[i];
    const std::string pre = prefix(i);
    if (I.algorithm == Algorithm::sgd) {
      const auto it = state.tensors.find(pre + "momentum_buffer");
      if (it != state.tensors.end() && !ps.state1.defined())
        ps.state1 = Tensor::zeros(ps.param.shape(), DType::f32, I.device);
      if (ps.state1.defined()) {
        if (it != state.tensors.end())
          ps.state1.copy_(it->second);
        else
          ps.state1.zero_();
      }
    }
    Tensor step_host = ps.step_state.to(Device::cpu());
    step_host.data_ptr<int64_t>()[0] = state.tensors.at(pre + "step").to_vector<int64_t>()[0];
    ps.step_state.copy_(step_host);
  }
  for (auto& [name, live] : live_tensors(I))
    if (name.find("momentum_buffer") == std::string::npos) {
      Tensor target = live;
      target.copy_(state.tensors.at(name));
    }
}

void Optimizer::save(const std::string& path) const {
  const StateDict s = state_dict();
  save_safetensors(path, s.tensors, s.metadata);
}

void Optimizer::load(const std::string& path) {
  StateDict s;
  s.metadata = load_safetensors_metadata(path);
  s.tensors = load_safetensors(path, Device::cpu());
  load_state_dict(s);
}

}  // namespace octet::optim
