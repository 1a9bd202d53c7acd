// Tests of octet::optim over whole runs: resuming from a saved state continues bit for bit,
// training octet demo's MLP with AdamW8bit ends within 2% of AdamW's loss, and on CUDA: the
// same parameter bits and states as the CPU after several steps, and a step captured in a CUDA
// graph (on octet::current_stream) replayed with a changing learning rate equals eager steps.
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "tests/helpers.hpp"
#include "tests/optim_helpers.hpp"

using namespace octet;
using namespace octet::test;

namespace {

std::string temp_path(const char* name) {
  return (std::filesystem::temp_directory_path() / cat("octet_optim_", name, "_", ::getpid(), ".safetensors")).string();
}

bool same_state(const optim::StateDict& a, const optim::StateDict& b) {
  if (a.metadata != b.metadata || a.tensors.size() != b.tensors.size()) return false;
  for (const auto& [name, t] : a.tensors)
    if (!b.tensors.count(name) || !bitwise_equal(t, b.tensors.at(name))) return false;
  return true;
}

// Parameters of two groups over block-aligned, partial-block and small sizes.
std::vector<optim::ParamGroup> groups_of(const std::vector<Tensor>& p) {
  std::vector<Tensor> first = {p[0], p[1]};
  first.insert(first.end(), p.begin() + 3, p.end());
  return {{first, {}, {}}, {{p[2]}, 2e-3, 0.0}};
}

std::vector<Tensor> fresh_params(Device dev, DType dtype) {
  manual_seed(21);
  return {randn({4096}).to(dtype, dev).requires_grad_(), randn({33, 301}).to(dtype, dev).requires_grad_(),
          randn({129}).to(dtype, dev).requires_grad_()};
}

std::unique_ptr<optim::Optimizer> make_grouped(int algorithm, const std::vector<Tensor>& p, int percentile) {
  if (algorithm == 0)
    return std::make_unique<optim::SGD>(groups_of(p), optim::SGDOptions{0.01, 0.9, 0.1, 0.01, false, percentile});
  if (algorithm == 1)
    return std::make_unique<optim::AdamW>(groups_of(p), optim::AdamWOptions{1e-2, 0.9, 0.99, 1e-8, 0.01, percentile});
  return std::make_unique<optim::AdamW8bit>(groups_of(p),
                                            optim::AdamW8bitOptions{1e-2, 0.9, 0.99, 1e-8, 0.01, percentile});
}

// Gradients for step `step` (the same on every device and run).
void set_grads(const std::vector<Tensor>& params, int step) {
  manual_seed(1000 + step);
  for (const Tensor& p : params) {
    Tensor p_mut = p;
    p_mut.set_grad(scale(randn(p.shape()), step % 3 == 2 ? 20.0 : 1.0).to(p.dtype(), p.device()));
  }
}

void run_steps(optim::Optimizer& opt, const std::vector<Tensor>& params, int first, int last) {
  for (int step = first; step < last; ++step) {
    set_grads(params, step);
    if (step == 4) opt.set_lr(1, 1e-3);
    opt.step();
  }
}

void resume_case(Device dev) {
  for (int algo = 0; algo < 3; ++algo) {
    CAPTURE(algo);
    const std::string path = temp_path("resume");
    std::vector<Tensor> pa = fresh_params(dev, DType::f32), pb = fresh_params(dev, DType::f32);
    auto a = make_grouped(algo, pa, 50);
    auto b = make_grouped(algo, pb, 50);
    run_steps(*a, pa, 0, 3);
    a->save(path);
    for (size_t i = 0; i < pa.size(); ++i) {  // the parameters travel separately (a model checkpoint)
      NoGradGuard no_grad;
      pb[i].copy_(pa[i]);
    }
    b->load(path);
    CHECK(same_state(a->state_dict(), b->state_dict()));
    run_steps(*a, pa, 3, 7);
    run_steps(*b, pb, 3, 7);
    for (size_t i = 0; i < pa.size(); ++i)
      CHECK(bitwise_equal(pa[i].detach().to(Device::cpu()), pb[i].detach().to(Device::cpu())));
    CHECK(same_state(a->state_dict(), b->state_dict()));
    CHECK(b->steps(0) == 7);
    CHECK(b->hyperparameters(1).lr == 1e-3);
    std::filesystem::remove(path);
  }
}
OCTET_TEST_BOTH("optim: resuming from a saved state continues bit for bit", resume_case)

// octet demo's model and task (tools/demo.cpp): Linear 64 -> 256, gelu, Linear 256 -> 8 on
// y = sin(x P) + 0.5 cos(x Q); the held-out loss after training.
double train_mlp(int algorithm, Device dev) {
  constexpr int64_t in = 64, hidden = 256, out = 8, batch = 128;
  manual_seed(31);
  const Tensor P = scale(randn({in, out}), 1 / std::sqrt(double(in))),
               Q = scale(randn({in, out}), 1 / std::sqrt(double(in)));
  auto target = [&](const Tensor& x) {
    NoGradGuard no_grad;
    const std::vector<float> a = matmul(x, P).to_vector<float>(), b = matmul(x, Q).to_vector<float>();
    std::vector<float> y(a.size());
    for (size_t i = 0; i < y.size(); ++i) y[i] = std::sin(a[i]) + 0.5f * std::cos(b[i]);
    return Tensor::from_vector(y, {x.size(0), out});
  };
  std::vector<Tensor> xs, ys;
  for (int b = 0; b < 16; ++b) {
    xs.push_back(randn({batch, in}));
    ys.push_back(target(xs.back()).to(dev));
    xs.back() = xs.back().to(dev);
  }
  const Tensor x_eval = randn({1024, in}), y_eval = target(x_eval).to(dev);
  Tensor w1 = scale(randn({hidden, in}), 1 / std::sqrt(double(in))).to(dev).requires_grad_();
  Tensor b1 = Tensor::zeros({hidden}, DType::f32, dev).requires_grad_();
  Tensor w2 = scale(randn({out, hidden}), 1 / std::sqrt(double(hidden))).to(dev).requires_grad_();
  Tensor b2 = Tensor::zeros({out}, DType::f32, dev).requires_grad_();
  const std::vector<Tensor> params = {w1, b1, w2, b2};
  std::unique_ptr<optim::Optimizer> opt;
  if (algorithm == 1)
    opt = std::make_unique<optim::AdamW>(params, optim::AdamWOptions{3e-3});
  else
    opt = std::make_unique<optim::AdamW8bit>(params, optim::AdamW8bitOptions{3e-3});
  auto loss_of = [&](const Tensor& x, const Tensor& y) { return mse_loss(linear(gelu(linear(x, w1, b1)), w2, b2), y); };
  for (int step = 0; step < 400; ++step) {
    opt->zero_grad();
    backward(loss_of(xs[step % 16], ys[step % 16]));
    opt->step();
  }
  NoGradGuard no_grad;
  return loss_of(x_eval.to(dev), y_eval).item();
}

void mlp_case(Device dev) {
  const double f32_loss = train_mlp(1, dev), eight_loss = train_mlp(2, dev);
  MESSAGE("held-out loss: AdamW ", f32_loss, ", AdamW8bit ", eight_loss);
  CHECK(f32_loss < 0.2);  // it learned something (the initial loss is about 0.6)
  CHECK(std::fabs(eight_loss - f32_loss) <= 0.02 * f32_loss);
}
OCTET_TEST_BOTH("optim: training the demo MLP with AdamW8bit ends within 2% of AdamW's loss", mlp_case)

OCTET_CUDA_TEST("optim: CUDA gives the CPU's parameter bits and states after several steps") {
  for (DType dtype : {DType::f32, DType::bf16, DType::f16})
    for (int algo = 0; algo < 3; ++algo) {
      CAPTURE(dtype_name(dtype));
      CAPTURE(algo);
      std::vector<Tensor> pc = fresh_params(Device::cpu(), dtype), pg = fresh_params(Device::cuda(0), dtype);
      // a misaligned parameter (offset 1) takes the kernels' element-wise path
      Tensor base_c = Tensor::zeros({5001}, dtype).requires_grad_(false), base_g = base_c.clone().to(Device::cuda(0));
      pc.push_back(view(base_c, 1, 5000).requires_grad_());
      pg.push_back(view(base_g, 1, 5000).requires_grad_());
      auto c = make_grouped(algo, pc, 100);
      auto g = make_grouped(algo, pg, 100);
      run_steps(*c, pc, 0, 6);
      run_steps(*g, pg, 0, 6);
      for (size_t i = 0; i < pc.size(); ++i) {
        CAPTURE(i);
        CHECK(bitwise_equal(pc[i].detach(), pg[i].detach().to(Device::cpu())));
      }
      CHECK(same_state(c->state_dict(), g->state_dict()));
      // With percentile clipping each device computes the clipping scale as percentile_clipping does
      // there (equal up to the order of the sum of squares), so the parameters agree closely.
      std::vector<Tensor> qc = fresh_params(Device::cpu(), dtype), qg = fresh_params(Device::cuda(0), dtype);
      auto cc = make_grouped(algo, qc, 30);
      auto cg = make_grouped(algo, qg, 30);
      run_steps(*cc, qc, 0, 6);
      run_steps(*cg, qg, 0, 6);
      for (size_t i = 0; i < qc.size(); ++i)
        CHECK(max_abs_diff(qc[i].detach().to(DType::f32), qg[i].detach().to(DType::f32, Device::cpu())) <
              (dtype == DType::f32 ? 1e-3 : 5e-2));
    }
  for (int64_t n : {int64_t{1}, int64_t{4099}, int64_t{300000}}) {  // clip_grad_norm_: the same bits
    manual_seed(41);
    Tensor a = Tensor::zeros({n}).requires_grad_(),
           b = Tensor::zeros({n}, DType::f32, Device::cuda(0)).requires_grad_();
    const Tensor grad = randn({n});
    a.set_grad(grad.clone());
    b.set_grad(grad.to(Device::cuda(0)));
    CHECK(bitwise_equal(optim::clip_grad_norm_({a}, 0.5), optim::clip_grad_norm_({b}, 0.5).to(Device::cpu())));
    CHECK(bitwise_equal(a.grad(), b.grad().to(Device::cpu())));
  }
}

OCTET_CUDA_TEST("optim: 600 tensors of mixed sizes (three multi-tensor launches) give the CPU's bits") {
  for (int algo = 0; algo < 3; ++algo) {
    CAPTURE(algo);
    std::vector<Tensor> pc, pg;
    for (int k = 0; k < 600; ++k) {
      const int64_t n = k % 7 == 0 ? 4096 + 37 * k : (k == 1 ? 0 : (k * 131) % 1500);  // blockwise, small, empty
      manual_seed(500 + k);
      pc.push_back(randn({n}).requires_grad_());
      pg.push_back(pc.back().detach().clone().to(Device::cuda(0)).requires_grad_());
    }
    auto c = make_optimizer(algo, pc, 100);
    auto g = make_optimizer(algo, pg, 100);
    for (int step = 0; step < 3; ++step) {
      set_grads(pc, step);
      set_grads(pg, step);
      c->step();
      g->step();
    }
    for (size_t i = 0; i < pc.size(); ++i) {
      CAPTURE(i);
      CHECK(bitwise_equal(pc[i].detach(), pg[i].detach().to(Device::cpu())));
    }
    CHECK(same_state(c->state_dict(), g->state_dict()));
  }
}

OCTET_CUDA_TEST("optim: a step captured in a CUDA graph and replayed equals eager steps") {
  const Device dev = Device::cuda(0);
  for (int algo = 0; algo < 3; ++algo) {
    CAPTURE(algo);
    std::vector<Tensor> pe = fresh_params(dev, DType::f32), pr = fresh_params(dev, DType::f32);
    auto eager = make_grouped(algo, pe, 20);
    auto replayed = make_grouped(algo, pr, 20);
    set_grads(pe, 0);
    for (size_t i = 0; i < pe.size(); ++i) pr[i].set_grad(pe[i].grad().clone());
    {  // an eager step elsewhere first, so that no kernel module is loaded during the capture
      std::vector<Tensor> pw = fresh_params(dev, DType::f32);
      auto warm = make_grouped(algo, pw, 20);
      set_grads(pw, 0);
      warm->step();
    }
    synchronize(dev);
    const cudaStream_t stream = current_stream(0);
    cudaGraph_t graph = nullptr;
    REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
    replayed->step();
    REQUIRE(cudaStreamEndCapture(stream, &graph) == cudaSuccess);
    cudaGraphExec_t exec = nullptr;
    REQUIRE(cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess);
    for (int step = 0; step < 5; ++step) {
      const double lr = 1e-2 / (1 + step);  // a schedule: set before each replay
      eager->set_lr(lr);
      replayed->set_lr(lr);
      eager->step();
      REQUIRE(cudaGraphLaunch(exec, stream) == cudaSuccess);
    }
    synchronize(dev);
    CHECK(replayed->steps(0) == 5);
    for (size_t i = 0; i < pe.size(); ++i)
      CHECK(bitwise_equal(pe[i].detach().to(Device::cpu()), pr[i].detach().to(Device::cpu())));
    CHECK(same_state(eager->state_dict(), replayed->state_dict()));
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
  }
}

}  // namespace
