// octet demo: trains the same small MLP (Linear -> gelu -> Linear) with each kind of linear layer
// (nn::Linear f32, LinearFP8Mixed, LinearFP8Global, LinearFP8) on one synthetic regression task
// and prints final losses, the gap to f32, the time per step and the optimizer's memory
// (--optimizer sgd|adamw|adamw8bit, octet::optim; state_bytes()).
// Data (fixed by --seed): x ~ N(0, 1)^in, y = sin(x P) + 0.5 cos(x Q) with P, Q ~ N(0, 1/in);
// training batches and a held-out set are made once, on the device, before any timing. Every
// model starts from the same weights (the global random stream is re-seeded before each one).
// Time per step: wall clock over all steps after the first, with one synchronize at the end.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>

#include "octet/octet.hpp"
#include "tools/args.hpp"

namespace octet::cli {
namespace {

const char* kDemoUsage =
    "usage: octet demo [--device cpu|cuda] [--steps N] [--seed S] [--lr LR] [--optimizer sgd|adamw|adamw8bit]\n"
    "  Trains Linear -> gelu -> Linear (64 -> 256 -> 8) with f32 and FP8 linear layers\n"
    "  (default: the GPU when present, 400 steps, seed 0, SGD; lr 0.1 for SGD, 0.003 for AdamW\n"
    "  and AdamW8bit) and prints the optimizer's memory next to the losses.\n";

constexpr int64_t kIn = 64, kHidden = 256, kOut = 8, kBatch = 128, kBatches = 32, kEval = 1024;

struct Data {
  std::vector<Tensor> x, y;  // training batches
  Tensor x_eval, y_eval;
};

// y = sin(x P) + 0.5 cos(x Q) row by row, on the host in f64 (x: n x kIn, P/Q: kIn x kOut).
Tensor targets(const std::vector<float>& x, const std::vector<float>& p, const std::vector<float>& q, int64_t n,
               Device dev) {
  std::vector<float> y(static_cast<size_t>(n * kOut));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < kOut; ++j) {
      double a = 0, b = 0;
      for (int64_t k = 0; k < kIn; ++k) {
        a += double(x[i * kIn + k]) * p[k * kOut + j];
        b += double(x[i * kIn + k]) * q[k * kOut + j];
      }
      y[i * kOut + j] = static_cast<float>(std::sin(a) + 0.5 * std::cos(b));
    }
  return Tensor::from_vector(y, {n, kOut}, dev);
}

Data make_data(uint64_t seed, Device dev) {
  manual_seed(seed);
  const double s = 1.0 / std::sqrt(double(kIn));
  const std::vector<float> p = scale(randn({kIn, kOut}), s).to_vector<float>();
  const std::vector<float> q = scale(randn({kIn, kOut}), s).to_vector<float>();
  Data d;
  auto batch = [&](int64_t n, Tensor& x, Tensor& y) {
    const std::vector<float> xv = randn({n, kIn}).to_vector<float>();
    x = Tensor::from_vector(xv, {n, kIn}, dev);
    y = targets(xv, p, q, n, dev);
  };
  d.x.resize(kBatches);
  d.y.resize(kBatches);
  for (int64_t b = 0; b < kBatches; ++b) batch(kBatch, d.x[b], d.y[b]);
  batch(kEval, d.x_eval, d.y_eval);
  return d;
}

using LayerFactory = std::function<std::unique_ptr<nn::Linear>(int64_t, int64_t, Device)>;

template <class L>
LayerFactory factory() {
  return [](int64_t in, int64_t out, Device dev) { return std::make_unique<L>(in, out, true, dev); };
}

struct Result {
  double start_loss = 0, train_loss = 0, eval_loss = 0, ms_per_step = 0;
  size_t optimizer_bytes = 0;
};

std::unique_ptr<optim::Optimizer> make_optimizer(const std::string& name, const std::vector<Tensor>& params, double lr) {
  if (name == "adamw") return std::make_unique<optim::AdamW>(params, optim::AdamWOptions{lr});
  if (name == "adamw8bit") return std::make_unique<optim::AdamW8bit>(params, optim::AdamW8bitOptions{lr});
  return std::make_unique<optim::SGD>(params, optim::SGDOptions{lr});
}

Result train(const LayerFactory& make, const Data& d, uint64_t seed, int64_t steps, const std::string& optimizer,
             double lr, Device dev) {
  manual_seed(seed + 1);  // the same initial weights for every kind of layer
  const auto l1 = make(kIn, kHidden, dev);
  const auto l2 = make(kHidden, kOut, dev);
  std::vector<Tensor> params = l1->parameters();
  for (const Tensor& t : l2->parameters()) params.push_back(t);
  auto loss_of = [&](const Tensor& x, const Tensor& y) { return mse_loss(l2->forward(gelu(l1->forward(x))), y); };
  const std::unique_ptr<optim::Optimizer> opt = make_optimizer(optimizer, params, lr);

  Result r;
  r.optimizer_bytes = opt->state_bytes();
  {
    NoGradGuard no_grad;
    r.start_loss = loss_of(d.x_eval, d.y_eval).item();
  }
  Tensor last;
  auto t0 = std::chrono::steady_clock::now();
  for (int64_t step = 0; step < steps; ++step) {
    if (step == 1) {  // the first step pays for allocations and cuBLAS setup
      synchronize(dev);
      t0 = std::chrono::steady_clock::now();
    }
    for (Tensor& p : params) p.zero_grad();
    last = loss_of(d.x[step % kBatches], d.y[step % kBatches]);
    backward(last);
    opt->step();
  }
  synchronize(dev);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  r.ms_per_step = steps > 1 ? ms / double(steps - 1) : ms;
  r.train_loss = last.defined() ? last.item() : NAN;
  NoGradGuard no_grad;
  r.eval_loss = loss_of(d.x_eval, d.y_eval).item();
  return r;
}

int run_demo(const Args& args) {
  ArgParser p(args, {}, {"--device", "--steps", "--seed", "--lr", "--optimizer"});
  if (!p.positional().empty()) throw UsageError(cat("unexpected argument '", p.positional()[0], "'"));
  const Device dev = p.device();
  const int64_t steps = p.integer("--steps", 400, 1, 1000000);
  const uint64_t seed = static_cast<uint64_t>(p.integer("--seed", 0, 0, INT64_MAX));
  const std::string optimizer = p.get("--optimizer", "sgd");
  if (optimizer != "sgd" && optimizer != "adamw" && optimizer != "adamw8bit")
    throw UsageError(cat("--optimizer expects sgd, adamw or adamw8bit, got '", optimizer, "'"));
  double lr = optimizer == "sgd" ? 0.1 : 0.003;
  if (p.has("--lr")) {
    const std::string text = p.get("--lr");
    char* end = nullptr;
    lr = std::strtod(text.c_str(), &end);
    if (end == text.c_str() || *end != '\0' || !(lr >= 0) || !std::isfinite(lr))
      throw UsageError(cat("--lr expects a finite number >= 0, got '", text, "'"));
  }
  const char* optimizer_name = optimizer == "sgd" ? "SGD" : optimizer == "adamw" ? "AdamW" : "AdamW8bit";
  std::printf("octet demo: MLP %lld -> %lld -> %lld (gelu), %lld steps of batch %lld, %s lr %g, seed %llu, on %s\n",
              (long long)kIn, (long long)kHidden, (long long)kOut, (long long)steps, (long long)kBatch, optimizer_name, lr,
              (unsigned long long)seed, dev.str().c_str());
  std::printf("task: y = sin(x P) + 0.5 cos(x Q), x ~ N(0, I); losses are mean squared error\n\n");
  const Data data = make_data(seed, dev);
  const std::pair<const char*, LayerFactory> kinds[] = {
      {"nn::Linear (f32)", factory<nn::Linear>()},
      {"nn::LinearFP8Mixed", factory<nn::LinearFP8Mixed>()},
      {"nn::LinearFP8Global", factory<nn::LinearFP8Global>()},
      {"nn::LinearFP8 (FP8 GEMMs)", [](int64_t in, int64_t out, Device dev) -> std::unique_ptr<nn::Linear> {
         auto l = std::make_unique<nn::LinearFP8>(in, out, true, dev);
         l->crossover_macs = 0;  // FP8 GEMMs even at this size (the default would run these in f32)
         return l;
       }},
  };
  std::printf("%-28s %12s %12s %12s %10s %14s\n", "layer", "train loss", "eval loss", "gap to f32", "ms/step",
              "optimizer mem");
  double base = NAN;
  for (const auto& [name, make] : kinds) {
    const Result r = train(make, data, seed, steps, optimizer, lr, dev);
    if (std::isnan(base)) {
      base = r.eval_loss;
      std::printf("%-28s %12s %12.5f\n", "(initial weights)", "", r.start_loss);
    }
    const double gap = r.eval_loss - base;
    std::printf("%-28s %12.5f %12.5f %+12.5f %10.3f %10.1f KiB\n", name, r.train_loss, r.eval_loss, gap, r.ms_per_step,
                double(r.optimizer_bytes) / 1024.0);
    std::fflush(stdout);
  }
  std::printf("\ngap to f32: eval loss minus the f32 model's (same data, same initial weights)\n");
  return 0;
}

}  // namespace

int demo(const Args& args) { return with_usage("demo", kDemoUsage, [&] { return run_demo(args); }); }

}  // namespace octet::cli
