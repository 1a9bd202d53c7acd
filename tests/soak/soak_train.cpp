// The soak test's trainer (driven by tests/test_soak.cpp, which kills it with SIGKILL at random
// points and starts it again): trains the demo's MLP (Linear 64 -> 256, gelu, Linear 256 -> 8)
// with AdamW8bit and percentile clipping on a fixed synthetic regression task, with input noise
// drawn from the global random stream each step, and saves a training checkpoint every EVERY
// steps. On start it resumes from the newest checkpoint in DIR that loads (octet's saves are
// atomic: a damaged one would be a bug, and is reported), so a run killed any number of times
// ends with the same bits as one never killed. At the end it writes DIR/final.safetensors (a
// training checkpoint) and exits 0.
//   usage: soak_train DIR STEPS EVERY [cpu|cuda]
// stdout, one line each, flushed: "resumed <step>", "damaged <file>", "saving <step>",
// "saved <step>", "done".
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>

#include "octet/octet.hpp"

using namespace octet;
namespace fs = std::filesystem;

namespace {

constexpr int64_t kIn = 64, kHidden = 256, kOut = 8, kBatch = 128, kBatches = 8;
constexpr uint64_t kDataSeed = 7, kInitSeed = 8, kTrainSeed = 9;

void say(const std::string& line) {
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

struct Model {
  nn::Linear l1, l2;
  explicit Model(Device device) : l1(kIn, kHidden, true, device), l2(kHidden, kOut, true, device) {}
  TensorMap named() const { return {{"l1.weight", l1.weight}, {"l1.bias", l1.bias}, {"l2.weight", l2.weight},
                                    {"l2.bias", l2.bias}}; }
  std::vector<Tensor> parameters() const { return {l1.weight, l1.bias, l2.weight, l2.bias}; }
  Tensor forward(const Tensor& x) { return l2.forward(gelu(l1.forward(x))); }
};

// x ~ N(0, 1), y = sin(x P) with P ~ N(0, 1/64): fixed by kDataSeed.
void make_data(Device device, std::vector<Tensor>& xs, std::vector<Tensor>& ys) {
  manual_seed(kDataSeed);
  const Tensor p = scale(randn({kIn, kOut}), 0.125);
  NoGradGuard no_grad;
  for (int64_t b = 0; b < kBatches; ++b) {
    const Tensor x = randn({kBatch, kIn});
    const std::vector<float> xp = matmul(x, p).to_vector<float>();
    std::vector<float> y(xp.size());
    for (size_t i = 0; i < y.size(); ++i) y[i] = std::sin(xp[i]);
    xs.push_back(x.to(device));
    ys.push_back(Tensor::from_vector(y, {kBatch, kOut}, device));
  }
}

int64_t step_of(const fs::path& p) {
  const std::string name = p.filename().string();
  if (name.rfind("ckpt-", 0) != 0 || p.extension() != ".safetensors") return -1;
  const std::string digits = name.substr(5, name.size() - 5 - 12);
  if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) return -1;
  return std::stoll(digits);
}

// Checkpoints in dir by step, newest last.
std::map<int64_t, fs::path> checkpoints(const fs::path& dir) {
  std::map<int64_t, fs::path> found;
  for (const auto& e : fs::directory_iterator(dir))
    if (const int64_t s = step_of(e.path()); s >= 0) found[s] = e.path();
  return found;
}

TrainingCheckpoint capture(const Model& model, const optim::Optimizer& opt, int64_t step) {
  TrainingCheckpoint c;
  c.step = step;
  c.parameters = model.named();
  const optim::StateDict state = opt.state_dict();
  c.optimizer = state.tensors;
  c.optimizer_metadata = state.metadata;
  c.rng = rng_state();
  return c;
}

int run(const fs::path& dir, int64_t steps, int64_t every, Device device) {
  fs::create_directories(dir);
  // A save killed part way leaves its temporary: nothing reads it, the trainer clears it.
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".tmp") fs::remove(e.path());
  std::vector<Tensor> xs, ys;
  make_data(device, xs, ys);
  manual_seed(kInitSeed);
  Model model(device);
  optim::AdamW8bit opt(model.parameters(), {.lr = 2e-3, .percentile_clipping = 5, .min_8bit_size = 4096});
  manual_seed(kTrainSeed);
  int64_t step = 0;
  const auto found = checkpoints(dir);
  for (auto it = found.rbegin(); it != found.rend(); ++it) {
    try {
      const TrainingCheckpoint c = load_training_checkpoint(it->second.string(), device);
      // All or nothing: the parameters are checked, the optimizer checks its whole state before
      // it writes any of it, and only then are the parameters written.
      check_restorable("parameters", c.parameters, model.named());
      opt.load_state_dict({c.optimizer, c.optimizer_metadata});
      restore_tensors("parameters", c.parameters, model.named());
      set_rng_state(c.rng);
      step = c.step;
      say("resumed " + std::to_string(step));
      break;
    } catch (const Error& e) {
      say("damaged " + it->second.filename().string() + ": " + e.what());
    }
  }
  while (step < steps) {
    const Tensor noise = scale(randn({kBatch, kIn}, DType::f32, device), 0.05);
    const Tensor x = add(xs[static_cast<size_t>(step % kBatches)], noise);
    opt.zero_grad();
    backward(mse_loss(model.forward(x), ys[static_cast<size_t>(step % kBatches)]));
    opt.step();
    ++step;
    if (step % every == 0 || step == steps) {
      char name[64];
      std::snprintf(name, sizeof name, "ckpt-%08lld.safetensors", static_cast<long long>(step));
      say("saving " + std::to_string(step));
      save_training_checkpoint((dir / name).string(), capture(model, opt, step));
      say("saved " + std::to_string(step));
      // Keep the newest two.
      auto all = checkpoints(dir);
      while (all.size() > 2) {
        fs::remove(all.begin()->second);
        all.erase(all.begin());
      }
    }
  }
  save_training_checkpoint((dir / "final.safetensors").string(), capture(model, opt, step));
  say("done");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4 || argc > 5) {
    std::fprintf(stderr, "usage: soak_train DIR STEPS EVERY [cpu|cuda]\n");
    return 2;
  }
  try {
    const Device device = argc == 5 && std::string(argv[4]) == "cuda" ? Device::cuda(0) : Device::cpu();
    return run(argv[1], std::atoll(argv[2]), std::max(1LL, std::atoll(argv[3])), device);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "soak_train: %s\n", e.what());
    return 1;
  }
}
