// Bad input to octet::optim: every case throws octet::Error naming the function, the argument,
// what was expected and what was given; a state file that does not fit leaves the live state as
// it was.
#include <cmath>
#include <filesystem>
#include <functional>
#include <string>

#include "tests/helpers.hpp"
#include "tests/optim_helpers.hpp"

using namespace octet;
using namespace octet::test;

namespace {

// fn throws octet::Error whose message holds every part.
void expect_error(const std::function<void()>& fn, std::initializer_list<const char*> parts) {
  std::string message;
  try {
    fn();
  } catch (const Error& e) {
    message = e.what();
  }
  CAPTURE(message);
  REQUIRE(!message.empty());
  for (const char* part : parts) CHECK(message.find(part) != std::string::npos);
}

Tensor param(const Shape& shape, DType dtype = DType::f32, Device dev = Device::cpu()) {
  return Tensor::zeros(shape, dtype, dev).requires_grad_();
}

TEST_CASE("optim: bad hyperparameters are refused by name") {
  const std::vector<Tensor> p = {param({4})};
  using optim::AdamW;
  using optim::AdamWOptions;
  expect_error([&] { AdamW(p, AdamWOptions{-1e-3}); }, {"optim::AdamW", "options.lr", ">= 0", "-0.001"});
  expect_error([&] { AdamW(p, AdamWOptions{NAN}); }, {"optim::AdamW", "options.lr", "finite", "nan"});
  expect_error([&] { AdamW(p, AdamWOptions{INFINITY}); }, {"options.lr", "inf"});
  expect_error([&] { AdamW(p, AdamWOptions{1e-3, 1.0}); }, {"options.beta1", "[0, 1)", "1"});
  expect_error([&] { AdamW(p, AdamWOptions{1e-3, -0.1}); }, {"options.beta1", "-0.1"});
  expect_error([&] { AdamW(p, AdamWOptions{1e-3, 0.9, 1.5}); }, {"options.beta2", "1.5"});
  expect_error([&] { AdamW(p, AdamWOptions{1e-3, 0.9, 0.999, 0.0}); }, {"options.eps", "> 0", "0"});
  expect_error([&] { AdamW(p, AdamWOptions{1e-3, 0.9, 0.999, -1e-8}); }, {"options.eps", "-1e-08"});
  expect_error([&] { AdamW(p, AdamWOptions{1e-3, 0.9, 0.999, 1e-8, -0.1}); }, {"options.weight_decay", "-0.1"});
  expect_error(
      [&] {
        AdamW(p, AdamWOptions{1e-3, 0.9, 0.999, 1e-8, 0.0, 0});
      },
      {"percentile_clipping", "[1, 100]", "0"});
  expect_error([&] { AdamW(p, AdamWOptions{1e-3, 0.9, 0.999, 1e-8, 0.0, 101}); }, {"percentile_clipping", "101"});
  expect_error(
      [&] {
        AdamW(p, AdamWOptions{1e-3, 0.9, 0.999, 1e-8, 0.0, 100, DType::f16});
      },
      {"state_dtype", "f32 or bf16", "f16"});
  expect_error(
      [&] {
        optim::AdamW8bit(p, optim::AdamW8bitOptions{1e-3, 0.9, 0.999, 1e-8, 0.0, 100, -1});
      },
      {"optim::AdamW8bit", "min_8bit_size", "-1"});
  expect_error(
      [&] {
        optim::AdamW8bit(p, optim::AdamW8bitOptions{1e-3, 0.9, 0.999, 0.0});
      },
      {"AdamW8bit", "options.eps"});
  expect_error([&] { optim::SGD(p, optim::SGDOptions{0.1, -0.9}); }, {"optim::SGD", "options.momentum", "-0.9"});
  expect_error(
      [&] {
        optim::SGD(p, optim::SGDOptions{0.1, 0.0, 0.0, 0.0, true});
      },
      {"optim::SGD", "options.nesterov", "momentum > 0"});
  expect_error([&] { optim::SGD(p, optim::SGDOptions{0.1, 0.9, 0.5, 0.0, true}); }, {"nesterov", "dampening 0.5"});
  expect_error([&] { AdamW({{{p[0]}, -1.0, {}}}); }, {"optim::AdamW", "groups[0].lr", "-1"});
  expect_error([&] { AdamW({{{p[0]}, {}, NAN}}); }, {"groups[0].weight_decay", "nan"});

  AdamW opt(p);
  const Tensor hyper_before = opt.hyperparameter_tensor(0).clone();
  expect_error([&] { opt.set_lr(0, -1.0); }, {"optim::AdamW::set_lr", "lr", "-1"});
  expect_error([&] { opt.set_lr(NAN); }, {"set_lr", "nan"});
  expect_error([&] { opt.set_lr(1, 1e-3); }, {"optim::AdamW::set_lr", "group", "below 1", "1"});
  optim::Hyperparameters h = opt.hyperparameters(0);
  h.beta2 = 1.0;
  expect_error([&] { opt.set_hyperparameters(0, h); }, {"set_hyperparameters", "h.beta2", "1"});
  CHECK(opt.hyperparameters(0).beta2 == 0.999);  // nothing changed
  CHECK(bitwise_equal(opt.hyperparameter_tensor(0), hyper_before));
  expect_error([&] { opt.params(3); }, {"optim::AdamW::params", "group"});
  expect_error([&] { opt.steps(1); }, {"optim::AdamW::steps", "index", "below 1"});
}

TEST_CASE("optim: bad parameters and gradients are refused by name") {
  expect_error([] { optim::AdamW({param({4}, DType::f64)}); },
               {"optim::AdamW", "groups[0].params[0]", "f32, f16 or bf16", "f64"});
  expect_error([] { optim::AdamW({Tensor()}); }, {"optim::AdamW", "groups[0].params[0]"});
  Tensor p = param({4});
  expect_error([&] { optim::SGD({p, p}); }, {"optim::SGD", "groups[0].params[1]", "each parameter once"});
  expect_error(
      [&] {
        optim::SGD(std::vector<optim::ParamGroup>{{{p}, {}, {}}, {{p.detach()}, {}, {}}});
      },
      {"groups[1].params[0]", "each parameter once"});

  Tensor w = param({3, 5}), b = param({5}, DType::bf16);
  optim::AdamW opt({w, b});
  const Tensor w_before = w.detach().clone();
  // set_grad validates, so a mismatched gradient can only come from outside the public API
  w.impl()->grad = Tensor::zeros({3, 5}, DType::bf16).impl_ptr();
  expect_error([&] { opt.step(); }, {"optim::AdamW::step", "params[0].grad()", "f32", "bf16"});
  w.impl()->grad = Tensor::zeros({15}).impl_ptr();
  expect_error([&] { opt.step(); }, {"optim::AdamW::step", "params[0].grad()", "(3, 5)", "(15,)"});
  CHECK(bitwise_equal(w.detach(), w_before));
  CHECK(opt.steps(0) == 0);
  w.impl()->grad = nullptr;

  optim::SGD moved({param({2})});
  optim::SGD target = std::move(moved);
  expect_error([&] { moved.step(); }, {"optim::Optimizer", "moved from"});  // NOLINT(bugprone-use-after-move)
  CHECK(target.group_count() == 1);

  expect_error([] { optim::clip_grad_norm_({param({3})}, 0.0); }, {"clip_grad_norm_", "max_norm", "> 0", "0"});
  expect_error([] { optim::clip_grad_norm_({param({3})}, NAN); }, {"clip_grad_norm_", "max_norm", "nan"});
  Tensor f64 = Tensor::zeros({3}, DType::f64).requires_grad_();
  f64.set_grad(Tensor::ones({3}, DType::f64));
  expect_error([&] { optim::clip_grad_norm_({f64}, 1.0); }, {"clip_grad_norm_", "params[0].grad()", "f64"});
}

OCTET_CUDA_TEST("optim: parameters on different devices are refused by name") {
  Tensor a = param({4}), b = param({4}, DType::f32, Device::cuda(0));
  expect_error([&] { optim::AdamW8bit({a, b}); }, {"optim::AdamW8bit", "groups[0].params[1]", "cpu", "cuda:0"});
  a.set_grad(Tensor::ones({4}));
  b.set_grad(Tensor::ones({4}, DType::f32, Device::cuda(0)));
  expect_error([&] { optim::clip_grad_norm_({a, b}, 1.0); }, {"clip_grad_norm_", "params[1].grad()", "cuda:0"});
  optim::SGD opt({a});
  a.impl()->grad = Tensor::ones({4}, DType::f32, Device::cuda(0)).impl_ptr();
  expect_error([&] { opt.step(); }, {"optim::SGD::step", "params[0].grad()", "cpu", "cuda:0"});
}

TEST_CASE("optim: a state file of another optimizer, layout or format is refused and changes nothing") {
  const std::string dir = std::filesystem::temp_directory_path().string();
  const std::string sgd_path = dir + cat("/octet_optim_sgd_", ::getpid(), ".safetensors");
  const std::string adam_path = dir + cat("/octet_optim_adam_", ::getpid(), ".safetensors");
  Tensor p = param({300}), q = param({301});
  p.set_grad(Tensor::ones({300}));
  q.set_grad(Tensor::ones({301}));
  optim::SGD sgd({p}, optim::SGDOptions{0.1, 0.9});
  sgd.step();
  sgd.save(sgd_path);
  optim::AdamW other_shape({q});
  other_shape.step();
  other_shape.save(adam_path);

  optim::AdamW adam({p});
  adam.step();
  const optim::StateDict before = adam.state_dict();
  auto unchanged = [&] {
    const optim::StateDict now = adam.state_dict();
    CHECK(now.metadata == before.metadata);
    for (const auto& [name, t] : before.tensors) CHECK(bitwise_equal(now.tensors.at(name), t));
  };
  expect_error([&] { adam.load(sgd_path); }, {"optim::AdamW::load_state_dict", "octet.optimizer", "adamw", "sgd"});
  unchanged();
  expect_error([&] { adam.load(adam_path); }, {"load_state_dict", "param.0.shape", "(300,)", "(301,)"});
  unchanged();
  expect_error([&] { adam.load(dir + "/octet_optim_no_such_file.safetensors"); }, {"octet_optim_no_such_file"});
  unchanged();

  optim::StateDict s = adam.state_dict();
  s.tensors["param.0.exp_avg"] = Tensor::zeros({300}, DType::bf16);
  expect_error([&] { adam.load_state_dict(s); }, {"load_state_dict", "param.0.exp_avg", "f32", "bf16"});
  s = adam.state_dict();
  s.tensors.erase("param.0.exp_avg_sq");
  expect_error([&] { adam.load_state_dict(s); }, {"load_state_dict", "param.0.exp_avg_sq", "no such tensor"});
  s = adam.state_dict();
  s.tensors["param.7.exp_avg"] = Tensor::zeros({300});
  expect_error([&] { adam.load_state_dict(s); }, {"load_state_dict", "param.7.exp_avg"});
  s = adam.state_dict();
  s.metadata["group.0.beta1"] = "1.5";
  expect_error([&] { adam.load_state_dict(s); }, {"load_state_dict", "beta1", "1.5"});
  s = adam.state_dict();
  s.metadata["group.0.lr"] = "fast";
  expect_error([&] { adam.load_state_dict(s); }, {"load_state_dict", "group.0.lr", "a number", "fast"});
  s = adam.state_dict();
  s.tensors["param.0.step"] = Tensor::full({}, -2.0, DType::i64);
  expect_error([&] { adam.load_state_dict(s); }, {"load_state_dict", "param.0.step", ">= 0", "-2"});
  s = adam.state_dict();
  s.metadata["octet.optimizer_format"] = "2";
  expect_error([&] { adam.load_state_dict(s); }, {"load_state_dict", "octet.optimizer_format", "'1'", "'2'"});
  unchanged();

  optim::AdamW8bit clipped({q}, optim::AdamW8bitOptions{1e-3, 0.9, 0.999, 1e-8, 0.0, 10});
  clipped.step();
  s = clipped.state_dict();
  s.tensors["param.0.clip.step"] = Tensor::full({}, 0.0, DType::i64);
  expect_error([&] { clipped.load_state_dict(s); },
               {"optim::AdamW8bit::load_state_dict", "param.0.clip.step", ">= 1", "0"});
  s = clipped.state_dict();
  s.tensors.erase("param.0.clip.gnorm_vec");
  expect_error([&] { clipped.load_state_dict(s); }, {"param.0.clip.gnorm_vec", "no such tensor"});
  s = clipped.state_dict();
  s.metadata["percentile_clipping"] = "100";
  expect_error([&] { clipped.load_state_dict(s); }, {"percentile_clipping", "'10'", "'100'"});
  std::filesystem::remove(sgd_path);
  std::filesystem::remove(adam_path);
}

}  // namespace
