// Validation and dispatch of the optim family (include/octet/optim.hpp): construction (every
// state allocated here, so step() allocates nothing), the hyperparameter setters and step().
// step() validates the gradients, runs percentile clipping per parameter when it is on, and hands
// the parameters, grouped by update kind and dtype, to one launcher per group (CPU reference or
// CUDA kernels, the same arithmetic).
#include "src/cpu/optim.hpp"

#include <cmath>
#include <cstring>
#include <map>
#include <tuple>

#include "kernels/clip.cuh"
#include "octet/autograd.hpp"
#include "octet/quant.hpp"
#include "src/check.hpp"
#include "src/cpu/quant.hpp"
#include "src/optim_internal.hpp"
#include "src/runtime_internal.hpp"

namespace octet::optim {
namespace {

namespace om = optim_math;
using kernels::OptimKind;
using kernels::OptimSlot;

const char* class_name(Algorithm a) {
  switch (a) {
    case Algorithm::sgd:
      return "optim::SGD";
    case Algorithm::adamw:
      return "optim::AdamW";
    case Algorithm::adamw8bit:
      return "optim::AdamW8bit";
  }
  return "optim";
}

void check_finite(std::string_view op, std::string arg, double v, double lo, bool lo_open, double hi, bool hi_open,
                  std::string_view expected) {
  const bool ok = std::isfinite(v) && (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi);
  if (!ok) fail_arg(op, arg, expected, cat(v));
}

// Whether every pointer of a slot allows the kernels' 4-element vector accesses.
bool vector_ok(const OptimSlot& s, size_t param_size, size_t state_size) {
  auto aligned = [](const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; };
  return aligned(s.param, 4 * param_size) && aligned(s.grad, 4 * param_size) &&
         (!s.state1 || aligned(s.state1, 4 * state_size)) && (!s.state2 || aligned(s.state2, 4 * state_size));
}

}  // namespace

std::string algorithm_name(Algorithm a) {
  switch (a) {
    case Algorithm::sgd:
      return "sgd";
    case Algorithm::adamw:
      return "adamw";
    case Algorithm::adamw8bit:
      return "adamw8bit";
  }
  return "unknown";
}

kernels::HyperValues hyper_values(const Hyperparameters& h) {
  return {{h.lr, h.weight_decay, h.beta1, h.beta2, h.eps, h.momentum, h.dampening, h.nesterov ? 1.0 : 0.0}};
}

Hyperparameters from_hyper_values(const kernels::HyperValues& v) {
  Hyperparameters h;
  h.lr = v.v[om::kLr];
  h.weight_decay = v.v[om::kWeightDecay];
  h.beta1 = v.v[om::kBeta1];
  h.beta2 = v.v[om::kBeta2];
  h.eps = v.v[om::kEps];
  h.momentum = v.v[om::kMomentum];
  h.dampening = v.v[om::kDampening];
  h.nesterov = v.v[om::kNesterov] != 0.0;
  return h;
}

void Optimizer::Impl::validate(std::string_view op, std::string_view arg, const Hyperparameters& h) const {
  const std::string a(arg);
  check_finite(op, a + ".lr", h.lr, 0, false, INFINITY, true, "a finite learning rate >= 0");
  check_finite(op, a + ".weight_decay", h.weight_decay, 0, false, INFINITY, true, "a finite weight decay >= 0");
  if (algorithm == Algorithm::sgd) {
    check_finite(op, a + ".momentum", h.momentum, 0, false, INFINITY, true, "a finite momentum >= 0");
    check_finite(op, a + ".dampening", h.dampening, -INFINITY, true, INFINITY, true, "a finite dampening");
    if (h.nesterov && (h.momentum <= 0 || h.dampening != 0))
      fail_arg(op, a + ".nesterov", "momentum > 0 and dampening 0 with nesterov",
               cat("momentum ", h.momentum, ", dampening ", h.dampening));
    return;
  }
  check_finite(op, a + ".beta1", h.beta1, 0, false, 1, true, "a beta in [0, 1)");
  check_finite(op, a + ".beta2", h.beta2, 0, false, 1, true, "a beta in [0, 1)");
  check_finite(op, a + ".eps", h.eps, 0, true, INFINITY, true, "a finite eps > 0");
}

void Optimizer::Impl::write_hyper(size_t group) {
  const kernels::HyperValues v = hyper_values(groups[group].h);
  Tensor& t = groups[group].hyper;
  if (device.is_cpu()) {
    std::memcpy(t.data(), v.v, sizeof v.v);
    return;
  }
  detail::DeviceGuard g(device);
  kernels::write_hyper(t.data_ptr<double>(), v, detail::stream(device));
}

void Optimizer::Impl::build_index() {
  const Code m = Code::dynamic(true), v = Code::dynamic(false);
  kernels::OptimTables tables;
  tables.m = cpu::index_tables(m.values().data());
  tables.v = cpu::index_tables(v.values().data());
  const cpu::IndexLut &lut_m = quant_internal::index_lut(m), &lut_v = quant_internal::index_lut(v);
  std::vector<uint8_t> bytes(sizeof tables);
  std::memcpy(bytes.data(), &tables, sizeof tables);
  // The compact tables when both exist and fit the kernel's 48 KiB of shared memory with the tables.
  const size_t words_m = lut_m.compact_entries.size(), words_v = lut_v.compact_entries.size();
  const bool compact = lut_m.compact.entries > 0 && lut_v.compact.entries > 0 && words_m % 4 == 0 && words_v % 4 == 0 &&
                       sizeof tables + 4 * (words_m + words_v) <= 48 * 1024;
  if (compact) {
    bytes.resize(sizeof tables + 4 * (words_m + words_v));
    std::memcpy(bytes.data() + sizeof tables, lut_m.compact_entries.data(), 4 * words_m);
    std::memcpy(bytes.data() + sizeof tables + 4 * words_m, lut_v.compact_entries.data(), 4 * words_v);
  }
  this->tables = Tensor::from_host(bytes.data(), bytes.size(), DType::u8, {int64_t(bytes.size())}, device);
  const auto* base = static_cast<const uint8_t*>(this->tables.data());
  index.tables = reinterpret_cast<const kernels::OptimTables*>(base);
  if (!compact) return;  // m.entries == 0: closed_form
  index.m = lut_m.compact;
  index.v = lut_v.compact;
  index.m_entries = reinterpret_cast<const uint32_t*>(base + sizeof tables);
  index.v_entries = reinterpret_cast<const uint32_t*>(base + sizeof tables + 4 * words_m);
  index.m_words = static_cast<int32_t>(words_m);
  index.v_words = static_cast<int32_t>(words_v);
}

void Optimizer::Impl::ensure_momentum(size_t group) {
  if (algorithm != Algorithm::sgd || groups[group].h.momentum == 0.0) return;
  for (size_t i : groups[group].members)
    if (!params[i].state1.defined()) params[i].state1 = Tensor::zeros(params[i].param.shape(), DType::f32, device);
}

Optimizer::Optimizer(Algorithm algorithm, std::vector<ParamGroup> groups, const Options& options)
    : impl_(std::make_unique<Impl>()) {
  Impl& I = impl();
  I.algorithm = algorithm;
  I.name = class_name(algorithm);
  const char* op = I.name.c_str();
  I.validate(op, "options", options.defaults);
  if (options.percentile_clipping < 1 || options.percentile_clipping > 100)
    fail_arg(op, "percentile_clipping", "a percentile in [1, 100] (100: off)", cat(options.percentile_clipping));
  const bool bf16_ok = algorithm == Algorithm::adamw;
  if (options.state_dtype != DType::f32 && !(bf16_ok && options.state_dtype == DType::bf16))
    fail_arg(op, "state_dtype", bf16_ok ? "f32 or bf16" : "f32", dtype_name(options.state_dtype));
  if (options.min_8bit_size < 0) fail_arg(op, "min_8bit_size", "a size >= 0", cat(options.min_8bit_size));
  I.percentile = options.percentile_clipping;
  I.state_dtype = options.state_dtype;
  I.min_8bit_size = options.min_8bit_size;

  bool have_device = false;
  for (size_t g = 0; g < groups.size(); ++g) {
    GroupState gs;
    gs.h = options.defaults;
    if (groups[g].lr) gs.h.lr = *groups[g].lr;
    if (groups[g].weight_decay) gs.h.weight_decay = *groups[g].weight_decay;
    I.validate(op, cat("groups[", g, "]"), gs.h);
    for (size_t k = 0; k < groups[g].params.size(); ++k) {
      const Tensor& p = groups[g].params[k];
      const std::string arg = cat("groups[", g, "].params[", k, "]");
      check::dtype_in(op, arg, p, {DType::f32, DType::f16, DType::bf16});
      if (!have_device) {
        check::usable(op, p.device());
        I.device = p.device();
        have_device = true;
      }
      check::device_is(op, arg, p, I.device);
      for (const ParamState& other : I.params)
        if (other.param.same(p) || (other.param.data() == p.data() && p.numel() > 0))
          fail_arg(op, arg, "each parameter once", cat(p.str(), " given twice"));
      ParamState ps;
      ps.param = p;
      ps.group = g;
      gs.members.push_back(I.params.size());
      I.params.push_back(std::move(ps));
    }
    gs.params = groups[g].params;
    I.groups.push_back(std::move(gs));
  }

  const Device dev = I.device;
  if (algorithm == Algorithm::adamw8bit) I.build_index();
  for (ParamState& ps : I.params) {
    const Shape& shape = ps.param.shape();
    const int64_t n = ps.param.numel();
    ps.step_state = Tensor::zeros({8}, DType::i64, dev);
    if (algorithm == Algorithm::adamw) {
      ps.state1 = Tensor::zeros(shape, I.state_dtype, dev);
      ps.state2 = Tensor::zeros(shape, I.state_dtype, dev);
    } else if (algorithm == Algorithm::adamw8bit) {
      ps.blockwise = n >= I.min_8bit_size && n > 0;
      if (ps.blockwise) {
        // zero states: the code of 0 in each table, absmax 0 (what quantize_blockwise gives for zeros)
        const Code m = Code::dynamic(true), v = Code::dynamic(false);
        const auto zero_index = [](const Code& c) {
          const quant_index::Tables t = cpu::index_tables(c.values().data());
          return quant_index::closed_form(t.code, t.mid, 0.0f);
        };
        const int64_t blocks = (n + kernels::kOptimBlock - 1) / kernels::kOptimBlock;
        ps.state1 = Tensor::full(shape, zero_index(m), DType::u8, dev);
        ps.state2 = Tensor::full(shape, zero_index(v), DType::u8, dev);
        ps.absmax1 = Tensor::zeros({blocks}, DType::f32, dev);
        ps.absmax2 = Tensor::zeros({blocks}, DType::f32, dev);
      } else {
        ps.state1 = Tensor::zeros(shape, DType::f32, dev);
        ps.state2 = Tensor::zeros(shape, DType::f32, dev);
      }
    }
    if (I.percentile < 100) {
      ps.clipped = true;
      ps.clip = ClipState::create(dev);
      const int64_t partials = dev.is_cuda() ? kernels::clip_partials(ps.param.dtype(), n) : 0;
      if (partials > 0) ps.clip_partials = Tensor::empty({partials}, DType::f64, dev);
    }
  }
  for (size_t g = 0; g < I.groups.size(); ++g) {
    I.groups[g].hyper = Tensor::empty({om::kHyperCount}, DType::f64, dev);
    I.write_hyper(g);
    I.ensure_momentum(g);
  }
}

Optimizer::~Optimizer() = default;
Optimizer::Optimizer(Optimizer&&) noexcept = default;
Optimizer& Optimizer::operator=(Optimizer&&) noexcept = default;

Optimizer::Impl& Optimizer::impl() const {
  if (!impl_) fail("optim::Optimizer", "used after it was moved from");
  return *impl_;
}

Algorithm Optimizer::algorithm() const { return impl().algorithm; }
Device Optimizer::device() const { return impl().device; }
size_t Optimizer::group_count() const { return impl().groups.size(); }

static void check_group(const Optimizer::Impl& I, std::string_view fn, size_t group) {
  if (group >= I.groups.size())
    fail_arg(cat(I.name, "::", fn), "group", cat("a group index below ", I.groups.size()), cat(group));
}

const std::vector<Tensor>& Optimizer::params(size_t group) const {
  check_group(impl(), "params", group);
  return impl().groups[group].params;
}

const Hyperparameters& Optimizer::hyperparameters(size_t group) const {
  check_group(impl(), "hyperparameters", group);
  return impl().groups[group].h;
}

void Optimizer::set_hyperparameters(size_t group, const Hyperparameters& h) {
  Impl& I = impl();
  check_group(I, "set_hyperparameters", group);
  I.validate(cat(I.name, "::set_hyperparameters"), "h", h);
  I.groups[group].h = h;
  I.write_hyper(group);
  I.ensure_momentum(group);
}

void Optimizer::set_lr(size_t group, double lr) {
  check_group(impl(), "set_lr", group);
  Hyperparameters h = impl().groups[group].h;
  h.lr = lr;
  check_finite(cat(impl().name, "::set_lr"), "lr", lr, 0, false, INFINITY, true, "a finite learning rate >= 0");
  set_hyperparameters(group, h);
}

void Optimizer::set_lr(double lr) {
  check_finite(cat(impl().name, "::set_lr"), "lr", lr, 0, false, INFINITY, true, "a finite learning rate >= 0");
  for (size_t g = 0; g < impl().groups.size(); ++g) set_lr(g, lr);
}

Tensor Optimizer::hyperparameter_tensor(size_t group) const {
  check_group(impl(), "hyperparameter_tensor", group);
  return impl().groups[group].hyper;
}

void Optimizer::zero_grad() {
  for (ParamState& ps : impl().params) ps.param.zero_grad();
}

void Optimizer::step() {
  Impl& I = impl();
  const std::string op = I.name + "::step";
  std::vector<size_t> active;
  for (size_t i = 0; i < I.params.size(); ++i) {
    const Tensor& p = I.params[i].param;
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    if (g.dtype() != p.dtype() || g.device() != p.device() || g.shape() != p.shape()) {
      const std::string arg = cat("params[", i, "].grad()");  // names built only for the error
      check::dtype_is(op, arg, g, p.dtype());
      check::shape_is(op, arg, g, p.shape());
      check::device_is(op, arg, g, p.device());
    }
    active.push_back(i);
  }
  if (active.empty()) return;
  NoGradGuard no_grad;  // parameters require grad; in-place writes are not recorded
  for (size_t i : active) autograd::mark_inplace(op, "params[i]", I.params[i].param);

  const Device dev = I.device;
  std::optional<detail::DeviceGuard> guard;
  if (dev.is_cuda()) guard.emplace(dev);
  if (I.percentile < 100) {
    for (size_t i : active) {
      ParamState& ps = I.params[i];
      const Tensor g = ps.param.grad();
      if (dev.is_cpu()) {
        percentile_clipping(g, ps.clip, I.percentile);
        continue;
      }
      const kernels::ClipStep a{ps.clip.gnorm_vec.data_ptr<float>(),    0,
                                ps.clip.step.data_ptr<int64_t>(),       I.percentile,
                                ps.clip.result.gnorm.data_ptr<float>(), ps.clip.result.clip_value.data_ptr<float>(),
                                ps.clip.result.scale.data_ptr<float>()};
      kernels::percentile_clipping(g.dtype(), g.data(), g.numel(),
                                   ps.clip_partials.defined() ? ps.clip_partials.data_ptr<double>() : nullptr, a,
                                   detail::stream(dev));
    }
  }

  // One launcher call per (kind, parameter dtype), parameters in order within each.
  std::map<std::tuple<int, int>, std::vector<OptimSlot>> batches;
  for (size_t i : active) {
    ParamState& ps = I.params[i];
    OptimKind kind = OptimKind::sgd;
    if (I.algorithm == Algorithm::adamw) kind = OptimKind::adamw;
    if (I.algorithm == Algorithm::adamw8bit)
      kind = ps.blockwise ? OptimKind::adamw8bit_blockwise : OptimKind::adamw8bit_f32;
    OptimSlot s;
    s.param = ps.param.data();
    s.grad = ps.param.grad().data();
    s.state1 = ps.state1.defined() ? ps.state1.data() : nullptr;
    s.state2 = ps.state2.defined() ? ps.state2.data() : nullptr;
    s.absmax1 = ps.blockwise ? ps.absmax1.data_ptr<float>() : nullptr;
    s.absmax2 = ps.blockwise ? ps.absmax2.data_ptr<float>() : nullptr;
    s.gnorm_scale = ps.clipped ? ps.clip.result.scale.data_ptr<float>() : nullptr;
    s.step_state = static_cast<om::StepState*>(ps.step_state.data());
    s.hyper = I.groups[ps.group].hyper.data_ptr<double>();
    s.numel = ps.param.numel();
    const size_t state_size = ps.state1.defined() ? dtype_size(ps.state1.dtype()) : 1;
    s.vector_ok = vector_ok(s, dtype_size(ps.param.dtype()), state_size);
    batches[{static_cast<int>(kind), static_cast<int>(ps.param.dtype())}].push_back(s);
  }
  for (const auto& [key, slots] : batches) {
    const auto kind = static_cast<OptimKind>(std::get<0>(key));
    const auto dtype = static_cast<DType>(std::get<1>(key));
    const DType state_dtype = kind == OptimKind::adamw ? I.state_dtype : DType::f32;
    const auto count = static_cast<int64_t>(slots.size());
    if (dev.is_cpu())
      cpu::optim_step(kind, dtype, state_dtype, slots.data(), count, I.index.tables);
    else
      kernels::optim_step(kind, dtype, state_dtype, slots.data(), count, I.index, detail::stream(dev));
  }
}

SGD::SGD(std::vector<ParamGroup> groups, const SGDOptions& o)
    : Optimizer(Algorithm::sgd, std::move(groups),
                Options{Hyperparameters{o.lr, o.weight_decay, 0.9, 0.999, 1e-8, o.momentum, o.dampening, o.nesterov},
                        o.percentile_clipping, DType::f32, 4096}) {}
SGD::SGD(const std::vector<Tensor>& params, const SGDOptions& o) : SGD(std::vector<ParamGroup>{{params, {}, {}}}, o) {}

AdamW::AdamW(std::vector<ParamGroup> groups, const AdamWOptions& o)
    : Optimizer(Algorithm::adamw, std::move(groups),
                Options{Hyperparameters{o.lr, o.weight_decay, o.beta1, o.beta2, o.eps, 0, 0, false},
                        o.percentile_clipping, o.state_dtype, 4096}) {}
AdamW::AdamW(const std::vector<Tensor>& params, const AdamWOptions& o)
    : AdamW(std::vector<ParamGroup>{{params, {}, {}}}, o) {}

AdamW8bit::AdamW8bit(std::vector<ParamGroup> groups, const AdamW8bitOptions& o)
    : Optimizer(Algorithm::adamw8bit, std::move(groups),
                Options{Hyperparameters{o.lr, o.weight_decay, o.beta1, o.beta2, o.eps, 0, 0, false},
                        o.percentile_clipping, DType::f32, o.min_8bit_size}) {}
AdamW8bit::AdamW8bit(const std::vector<Tensor>& params, const AdamW8bitOptions& o)
    : AdamW8bit(std::vector<ParamGroup>{{params, {}, {}}}, o) {}

static AdamW8bitOptions without_decay(AdamW8bitOptions o) {
  o.weight_decay = 0.0;
  return o;
}
Adam8bit::Adam8bit(std::vector<ParamGroup> groups, AdamW8bitOptions o)
    : AdamW8bit(std::move(groups), without_decay(o)) {}
Adam8bit::Adam8bit(const std::vector<Tensor>& params, AdamW8bitOptions o) : AdamW8bit(params, without_decay(o)) {}

}  // namespace octet::optim
