// octet::Graph (graph.hpp): a training step (forward, backward, clipping, an optimizer or
// sgd_step) captured once and replayed with new inputs copied into the captured input tensors
// equals the same eager steps bit for bit, on the CPU (capture runs the work, replay runs it
// again) and on CUDA (a graph); the clear errors for host reads, waits, host copies and nested
// captures inside a capture, each leaving the stream usable; tensors allocated during a capture
// (freed inside it, or outliving it) and storage dropped during it.
#include <doctest/doctest.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "octet/octet.hpp"
#include "tests/helpers.hpp"

namespace {

using namespace octet;
using octet::test::bitwise_equal;

// Linear(in, hidden) -> gelu -> Linear(hidden, in), as bitsandbytes' test_fp8linear model.
struct Mlp {
  std::unique_ptr<nn::Linear> first, second;
  Mlp(bool fp8, int64_t in, int64_t hidden, Device device) {
    if (fp8) {
      first = std::make_unique<nn::LinearFP8Mixed>(in, hidden, true, device);
      second = std::make_unique<nn::LinearFP8Mixed>(hidden, in, true, device);
    } else {
      first = std::make_unique<nn::Linear>(in, hidden, true, device);
      second = std::make_unique<nn::Linear>(hidden, in, true, device);
    }
  }
  std::vector<Tensor> parameters() const {
    std::vector<Tensor> all = first->parameters(), more = second->parameters();
    all.insert(all.end(), more.begin(), more.end());
    return all;
  }
  Tensor forward(const Tensor& x) { return second->forward(gelu(first->forward(x))); }
};

void copy_parameters(const Mlp& from, Mlp& to) {
  NoGradGuard no_grad;
  const std::vector<Tensor> source = from.parameters();
  std::vector<Tensor> target = to.parameters();
  for (size_t i = 0; i < source.size(); ++i) target[i].copy_(source[i]);
}

// One training step of each kind the brief names: AdamW8bit with its built-in percentile
// clipping (kind 0), or ClipState clipping of the first weight's gradient and sgd_step (kind 1).
struct Trainer {
  Mlp model;
  std::unique_ptr<optim::Optimizer> optimizer;
  ClipState clip;
  int kind;
  Trainer(int kind, bool fp8, int64_t features, Device device)
      : model(fp8, features, 2 * features, device), clip(ClipState::create(device)), kind(kind) {
    if (kind == 0)
      optimizer = std::make_unique<optim::AdamW8bit>(model.parameters(),
                                                     optim::AdamW8bitOptions{1e-2, 0.9, 0.999, 1e-8, 1e-2, 5, 1024});
  }
  Tensor step(const Tensor& x, const Tensor& target) {
    for (Tensor p : model.parameters()) p.zero_grad();
    Tensor loss = mse_loss(model.forward(x), target);
    backward(loss);
    if (kind == 0) {
      optimizer->step();
    } else {
      const Tensor grad = model.first->weight.grad();
      scale_by_(grad, percentile_clipping(grad, clip, 5).scale);
      nn::sgd_step(model.parameters(), 1e-2);
    }
    return loss;
  }
};

Tensor random_input(const Shape& shape, double lo, Device device) {
  Tensor t = Tensor::empty(shape, DType::f32, device);
  nn::init::uniform_(t, lo, lo + 2.0);
  return t;
}

// Five steps of eager and of replayed Trainers from the same parameters, batch 10, on
// Linear(features, 2 features) -> gelu -> Linear(2 features, features).
void replay_equals_eager(Device device, int64_t features) {
  for (int kind = 0; kind < 2; ++kind)
    for (bool fp8 : {false, true}) {
      CAPTURE(kind);
      CAPTURE(fp8);
      Trainer eager(kind, fp8, features, device), replayed(kind, fp8, features, device);
      copy_parameters(eager.model, replayed.model);
      constexpr int kSteps = 5;
      std::vector<Tensor> inputs, targets;
      for (int i = 0; i < kSteps; ++i) {
        inputs.push_back(random_input({10, features}, -1.0, device));
        targets.push_back(random_input({10, features}, -0.5, device));
      }
      // The captured input tensors: each step's values are copied into them first. Step 0 is the
      // eager warm-up, step 1 the capture (which runs it), the others replays.
      Tensor x = Tensor::empty({10, features}, DType::f32, device);
      Tensor target = Tensor::empty({10, features}, DType::f32, device);
      Tensor loss;
      std::optional<Graph> graph;
      for (int i = 0; i < kSteps; ++i) {
        CAPTURE(i);
        const Tensor eager_loss = eager.step(inputs[i], targets[i]);
        x.copy_(inputs[i]);
        target.copy_(targets[i]);
        if (i == 0)
          loss = replayed.step(x, target);
        else if (i == 1)
          graph = Graph::capture(device, [&] { loss = replayed.step(x, target); });
        else
          graph->replay();
        CHECK(bitwise_equal(eager_loss.to(Device::cpu()), loss.to(Device::cpu())));
        const std::vector<Tensor> pe = eager.model.parameters(), pr = replayed.model.parameters();
        for (size_t p = 0; p < pe.size(); ++p) {
          CAPTURE(p);
          CHECK(bitwise_equal(pe[p].detach().to(Device::cpu()), pr[p].detach().to(Device::cpu())));
          CHECK(bitwise_equal(pe[p].grad().to(Device::cpu()), pr[p].grad().to(Device::cpu())));
        }
      }
      CHECK(graph->device() == device);
      if (kind == 0) CHECK(replayed.optimizer->steps(0) == kSteps);
      if (kind == 1)
        CHECK(bitwise_equal(eager.clip.gnorm_vec.to(Device::cpu()), replayed.clip.gnorm_vec.to(Device::cpu())));
    }
}
void small_model_replay_equals_eager(Device device) { replay_equals_eager(device, 32); }
OCTET_TEST_BOTH("Graph: a captured training step replayed with new inputs equals eager steps",
                small_model_replay_equals_eager)

// bitsandbytes' test_fp8linear model (the bench's graph row): 1024 -> 2048 -> 1024.
OCTET_CUDA_TEST("Graph: the test_fp8linear model's captured step replayed equals eager steps") {
  replay_equals_eager(Device::cuda(0), 1024);
}

TEST_CASE("Graph: errors on any machine") {
  CHECK_THROWS_WITH_AS(Graph::capture(Device::cpu(), {}), doctest::Contains("Graph::capture: argument 'work'"),
                       Error);
  CHECK_FALSE(capturing(Device::cpu()));
  Graph graph = Graph::capture(Device::cpu(), [] {});
  Graph moved = std::move(graph);
  moved.replay();
  // NOLINTNEXTLINE(bugprone-use-after-move): a moved-from Graph is refused by name
  CHECK_THROWS_WITH_AS(graph.replay(), doctest::Contains("Graph::replay: argument 'self'"), Error);
  CHECK(moved.nodes() == 0);
  // Work that throws: the exception comes out of capture unchanged.
  CHECK_THROWS_WITH_AS(Graph::capture(Device::cpu(), [] { fail("my step", "broke"); }),
                       doctest::Contains("my step: broke"), Error);
  if (!test::has_gpu()) {
    CHECK_THROWS_AS(Graph::capture(Device::cuda(0), [] {}), Error);
    CHECK_THROWS_AS(capturing(Device::cuda(0)), Error);
  }
}

TEST_CASE("Graph: on the CPU, capture runs the work once and each replay once more") {
  int runs = 0;
  Tensor counter = Tensor::zeros({3}, DType::f32, Device::cpu());
  const Tensor ones = Tensor::ones({3}, DType::f32, Device::cpu());
  Graph graph = Graph::capture(Device::cpu(), [&] {
    ++runs;
    axpy_(counter, 1.0, ones);
  });
  CHECK(runs == 1);
  graph.replay();
  graph.replay();
  CHECK(runs == 3);
  CHECK(counter.to_vector<float>() == std::vector<float>{3, 3, 3});
}

// Each refused call names its op and says a capture is in progress; the capture is abandoned and
// the stream works afterwards.
OCTET_CUDA_TEST("Graph: host reads and other capture-breaking calls inside a capture give clear errors") {
  const Device dev = Device::cuda(0);
  const Tensor x = Tensor::ones({4}, DType::f32, dev);
  (void)add(x, x);  // warm up
  synchronize(dev);
  const Code fresh(create_linear_map(true, 8), "fresh");  // its device table is not uploaded yet
  struct Case {
    const char* op;
    std::function<void()> call;
  };
  const std::vector<Case> cases = {
      {"Tensor::item", [&] { (void)sum(x).item(); }},
      {"Tensor::to_vector", [&] { (void)x.to_vector<float>(); }},
      {"Tensor::to", [&] { (void)x.to(Device::cpu()); }},
      {"synchronize", [&] { synchronize(dev); }},
      {"Tensor::from_vector", [&] { (void)Tensor::from_vector(std::vector<float>{1, 2}, dev); }},
      {"Tensor::copy_", [&] { Tensor(add(x, x)).copy_(Tensor::ones({4}, DType::f32, Device::cpu())); }},
      {"Graph::capture", [&] { (void)Graph::capture(dev, [] {}); }},
      {"Code", [&] { (void)quantize_blockwise(x, fresh, 64); }},
  };
  for (const Case& c : cases) {
    CAPTURE(c.op);
    Tensor left_behind;
    try {
      (void)Graph::capture(dev, [&] {
        left_behind = add(x, x);
        c.call();
      });
      FAIL("no error");
    } catch (const Error& e) {
      const std::string message = e.what();
      CHECK(message.rfind(std::string(c.op) + ": ", 0) == 0);
      CHECK(message.find("a capture is in progress") != std::string::npos);
    }
    left_behind = Tensor();  // created by the abandoned capture: dropped unread
    CHECK_FALSE(capturing(dev));
    CHECK(add(x, x).to_vector<float>() == std::vector<float>{2, 2, 2, 2});
  }
  Graph graph = Graph::capture(dev, [&] { (void)add(x, x); });
  CHECK_THROWS_WITH_AS(Graph::capture(dev, [&] { graph.replay(); }),
                       doctest::Contains("Graph::replay: launches a graph"), Error);
  // Work that leaves another stream current: what follows would not be captured.
  cudaStream_t other = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&other, cudaStreamNonBlocking) == cudaSuccess);
  CHECK_THROWS_WITH_AS(Graph::capture(dev, [&] { set_current_stream(0, other); }),
                       doctest::Contains("Graph::capture: the work changed cuda:0's current stream"), Error);
  set_current_stream(0, nullptr);
  CHECK_FALSE(capturing(dev));
  CHECK(add(x, x).to_vector<float>() == std::vector<float>{2, 2, 2, 2});
  REQUIRE(cudaStreamDestroy(other) == cudaSuccess);
}

// Temporaries freed inside the graph, an output that outlives the capture and holds each replay's
// values, and storage from before the capture dropped during it (the graph still reads it).
OCTET_CUDA_TEST("Graph: allocations inside a capture and storage dropped during it") {
  const Device dev = Device::cuda(0);
  Tensor input = Tensor::from_vector(std::vector<float>{1, 2, 3}, dev);
  Tensor old = Tensor::from_vector(std::vector<float>{10, 20, 30}, dev);
  (void)add(input, old);  // warm up
  synchronize(dev);
  size_t used_before = 0;
  REQUIRE(cudaDeviceGetGraphMemAttribute(0, cudaGraphMemAttrUsedMemCurrent, &used_before) == cudaSuccess);
  Tensor out;
  Graph graph = Graph::capture(dev, [&] {
    const Tensor doubled = scale(input, 2.0);  // freed inside the graph
    out = add(doubled, old);
    old = Tensor();  // its storage stays with the graph
  });
  CHECK(graph.nodes() >= 3);
  CHECK(out.to_vector<float>() == std::vector<float>{12, 24, 36});
  input.copy_(Tensor::from_vector(std::vector<float>{-1, 0, 5}, dev));
  graph.replay();
  CHECK(out.to_vector<float>() == std::vector<float>{8, 20, 40});
  input.copy_(Tensor::from_vector(std::vector<float>{0, 0, 0}, dev));
  graph.replay();
  CHECK(out.to_vector<float>() == std::vector<float>{10, 20, 30});  // the same address, the latest values
  // Dropped between replays, the output is allocated again by the next replay and freed by the
  // Graph: once everything is gone, no graph memory stays in use.
  out = Tensor();
  graph.replay();
  graph = Graph::capture(dev, [] {});
  synchronize(dev);
  size_t used = 0;
  REQUIRE(cudaDeviceGetGraphMemAttribute(0, cudaGraphMemAttrUsedMemCurrent, &used) == cudaSuccess);
  CHECK(used <= used_before);
}

}  // namespace
