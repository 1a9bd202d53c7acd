// Concurrency suite: kThreads host threads, each with its own tensors (on CUDA, its own stream),
// run the same work at once, repeatedly, and every result must equal the single-threaded result
// bit for bit. Work: quantize/dequantize (global and blockwise, with shared Code tables whose
// per-device caches are filled concurrently), percentile clipping, forward + backward + SGD step
// through nn::Linear, LinearFP8Mixed, LinearFP8Global and LinearFP8, optimizer steps (SGD with
// momentum, AdamW, AdamW8bit with percentile clipping), and the global random stream (concurrent draws take disjoint pieces of it). Inputs are made on the main thread
// before the threads start (the global random stream is shared; see docs/reliability.md).
// The suite also runs under ThreadSanitizer in CI (.ci/run, build-tsan), which checks the
// library's shared state (random stream, Code caches, autograd sequence) for data races.
#include <algorithm>
#include <exception>
#include <functional>
#include <string>
#include <thread>

#include <cuda_runtime_api.h>

#include "tests/helpers.hpp"

using namespace octet;

namespace {

constexpr int kThreads = 8;
constexpr int kIterations = 10;

// Work one worker does with its own inputs; returns what it computed (any device).
using Job = std::function<std::vector<Tensor>(int worker)>;

std::vector<Tensor> on_host(const std::vector<Tensor>& ts) {
  std::vector<Tensor> out;
  for (const Tensor& t : ts) out.push_back(t.to(Device::cpu()));
  return out;
}

// Runs job(w) once per worker on this thread (the reference), then kThreads threads each run
// job(w) kIterations times at once; every result must equal the reference bit for bit.
// On CUDA each thread enqueues its work on a stream of its own (StreamGuard).
void run_concurrently(const Job& job, Device device) {
  std::vector<std::vector<Tensor>> expected(kThreads);
  for (int w = 0; w < kThreads; ++w) expected[w] = on_host(job(w));
  // The inputs were made on this thread's stream; the workers' streams must see them.
  synchronize(device);
  std::vector<int> mismatches(kThreads, 0);
  std::vector<std::exception_ptr> errors(kThreads);
  std::vector<std::thread> threads;
  for (int w = 0; w < kThreads; ++w)
    threads.emplace_back([&, w] {
      cudaStream_t stream = nullptr;
      try {
        if (device.is_cuda() && cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) != cudaSuccess)
          throw Error("cudaStreamCreateWithFlags failed");
        StreamGuard guard(device, stream);
        for (int it = 0; it < kIterations; ++it) {
          const std::vector<Tensor> got = on_host(job(w));
          bool same = got.size() == expected[w].size();
          for (size_t i = 0; same && i < got.size(); ++i) same = test::bitwise_equal(got[i], expected[w][i]);
          if (!same) ++mismatches[w];
        }
        synchronize(device);  // before the guard ends: the tensors freed in the job free on this stream
      } catch (...) {
        errors[w] = std::current_exception();
      }
      if (stream) cudaStreamDestroy(stream);
    });
  for (auto& t : threads) t.join();
  for (int w = 0; w < kThreads; ++w) {
    CAPTURE(w);
    if (errors[w]) std::rethrow_exception(errors[w]);
    CHECK(mismatches[w] == 0);
  }
}

// One input per worker, drawn on this thread from a fixed seed (odd sizes, partial blocks).
std::vector<Tensor> inputs(const Shape& shape, Device device, uint64_t seed) {
  manual_seed(seed);
  std::vector<Tensor> out;
  for (int w = 0; w < kThreads; ++w) out.push_back(randn(shape).to(device));
  return out;
}

void quantize_concurrently(Device device) {
  const std::vector<Tensor> a = inputs({3, 3333}, device, 11);
  // Shared tables whose per-device caches (table, index LUT) are built by whichever thread comes first.
  const Code linear(create_linear_map(true, 8), "linear-shared");
  const Code dynamic = Code::dynamic();
  run_concurrently(
      [&](int w) {
        const Quantized global = quantize(a[w], linear);
        const Quantized blocks = quantize_blockwise(a[w], dynamic, 256);
        const Quantized nested = quantize_blockwise(a[w], dynamic, 64, true);
        return std::vector<Tensor>{global.codes, global.state.absmax, dequantize(global.codes, global.state),
                                   blocks.codes, blocks.state.absmax, dequantize_blockwise(blocks.codes, blocks.state),
                                   nested.codes, dequantize_blockwise(nested.codes, nested.state),
                                   fake_quantize_blockwise(a[w], Code::fp8_e4m3(), 128)};
      },
      device);
}
OCTET_TEST_BOTH("threads: quantize and dequantize from 8 threads equal one thread's bits", quantize_concurrently)

void clip_concurrently(Device device) {
  const std::vector<Tensor> grads = inputs({1001}, device, 12);
  run_concurrently(
      [&](int w) {
        Tensor history = Tensor::zeros({100}, DType::f32, device);
        std::vector<Tensor> out;
        for (int64_t step = 1; step <= 4; ++step) {
          const Tensor g = scale(grads[w], double(step));
          const ClipResult r = percentile_clipping(g, history, step);
          out.insert(out.end(), {r.gnorm, r.clip_value, r.scale});
        }
        ClipState state = ClipState::create(device);
        for (int step = 0; step < 3; ++step) {
          const ClipResult& r = percentile_clipping(grads[w], state);
          out.push_back(r.scale.clone());
        }
        Tensor scaled = grads[w].clone();
        scale_by_(scaled, out[2]);
        out.push_back(history);
        out.push_back(state.gnorm_vec);
        out.push_back(scaled);
        return out;
      },
      device);
}

// A layer per worker, made on this thread (initialization draws from the global stream); each
// run restores the initial weights, then does forward, backward and one SGD step.
template <class Layer>
void layer_concurrently(Device device) {
  manual_seed(13);
  std::vector<std::unique_ptr<Layer>> layers;
  std::vector<std::vector<Tensor>> initial(kThreads);
  for (int w = 0; w < kThreads; ++w) {
    layers.push_back(std::make_unique<Layer>(48, 40, true, device));
    for (const Tensor& p : layers.back()->parameters()) initial[w].push_back(p.clone());
  }
  const std::vector<Tensor> x = inputs({3, 17, 48}, device, 14);
  const std::vector<Tensor> target = inputs({3, 17, 40}, device, 15);
  run_concurrently(
      [&](int w) {
        Layer& layer = *layers[w];
        const std::vector<Tensor> params = layer.parameters();
        {
          NoGradGuard no_grad;
          for (size_t i = 0; i < params.size(); ++i) {
            Tensor p = params[i];
            p.copy_(initial[w][i]);
          }
        }
        for (Tensor p : params) p.zero_grad();
        const Tensor loss = mse_loss(gelu(layer.forward(x[w])), target[w]);
        backward(loss);
        std::vector<Tensor> out{loss};
        for (const Tensor& p : params) out.push_back(p.grad());
        nn::sgd_step(params, 0.05);
        for (const Tensor& p : params) out.push_back(p.detach().clone());
        return out;
      },
      device);
}

// Per worker: parameters and gradients made on this thread; each run makes a fresh optimizer
// over copies of them and takes a few steps (the 8-bit one with its blockwise states and its
// clipping histories), returning the parameters and the whole optimizer state.
void optimizers_concurrently(Device device) {
  const std::vector<Tensor> weights = inputs({67, 70}, device, 16);  // 4690 elements: 8-bit states
  const std::vector<Tensor> biases = inputs({67}, device, 17);
  const std::vector<Tensor> grads = inputs({67, 70}, device, 18);
  const std::vector<Tensor> bias_grads = inputs({67}, device, 19);
  run_concurrently(
      [&](int w) {
        std::vector<Tensor> out;
        auto run = [&](auto make) {
          Tensor weight = weights[w].clone().requires_grad_(), bias = biases[w].clone().requires_grad_();
          auto opt = make(std::vector<Tensor>{weight, bias});
          for (int step = 0; step < 3; ++step) {
            weight.set_grad(scale(grads[w], 1.0 + step));
            bias.set_grad(bias_grads[w]);
            opt.step();
          }
          out.push_back(weight.detach());
          out.push_back(bias.detach());
          for (const auto& [name, t] : opt.state_dict().tensors) out.push_back(t);
        };
        run([](std::vector<Tensor> p) { return optim::SGD(p, {.lr = 0.01, .momentum = 0.9}); });
        run([](std::vector<Tensor> p) { return optim::AdamW(p, {.lr = 0.01}); });
        run([](std::vector<Tensor> p) { return optim::AdamW8bit(p, {.lr = 0.01, .percentile_clipping = 5}); });
        return out;
      },
      device);
}

void linear_concurrently(Device device) { layer_concurrently<nn::Linear>(device); }
void fp8_mixed_concurrently(Device device) { layer_concurrently<nn::LinearFP8Mixed>(device); }
void fp8_global_concurrently(Device device) { layer_concurrently<nn::LinearFP8Global>(device); }
void fp8_gemm_concurrently(Device device) { layer_concurrently<nn::LinearFP8>(device); }

}  // namespace

OCTET_TEST_BOTH("threads: percentile clipping from 8 threads equals one thread's bits", clip_concurrently)
OCTET_TEST_BOTH("threads: SGD, AdamW and AdamW8bit steps from 8 threads equal one thread's bits",
                optimizers_concurrently)
OCTET_TEST_BOTH("threads: nn::Linear forward+backward+SGD from 8 threads equals one thread's bits",
                linear_concurrently)
OCTET_TEST_BOTH("threads: LinearFP8Mixed forward+backward+SGD from 8 threads equals one thread's bits",
                fp8_mixed_concurrently)
OCTET_TEST_BOTH("threads: LinearFP8Global forward+backward+SGD from 8 threads equals one thread's bits",
                fp8_global_concurrently)
OCTET_TEST_BOTH("threads: LinearFP8 forward+backward+SGD from 8 threads equals one thread's bits",
                fp8_gemm_concurrently)

TEST_CASE("threads: concurrent rand/randn draw disjoint pieces of the global stream") {
  // Each call takes the next numel values of the stream under one lock, so the values all
  // threads drew, together, are exactly those of the same calls made one after another.
  constexpr int kCalls = 6;
  constexpr int64_t kCount = 250;  // even: no value is dropped between calls
  manual_seed(21);
  std::vector<float> sequential;
  for (int i = 0; i < kThreads * kCalls; ++i) {
    const std::vector<float> v = rand({kCount}).to_vector<float>();
    sequential.insert(sequential.end(), v.begin(), v.end());
  }
  manual_seed(21);
  std::vector<std::vector<float>> drawn(kThreads);
  std::vector<std::thread> threads;
  for (int w = 0; w < kThreads; ++w)
    threads.emplace_back([&, w] {
      for (int i = 0; i < kCalls; ++i) {
        const std::vector<float> v = rand({kCount}).to_vector<float>();
        drawn[w].insert(drawn[w].end(), v.begin(), v.end());
      }
    });
  for (auto& t : threads) t.join();
  std::vector<float> together;
  for (const auto& d : drawn) together.insert(together.end(), d.begin(), d.end());
  std::sort(sequential.begin(), sequential.end());
  std::sort(together.begin(), together.end());
  CHECK(together == sequential);
  // The stream moved past every draw: the next value is the one after all of them.
  const RngState after = rng_state();
  CHECK(after.seed == 21);
  CHECK(after.offset == uint64_t(kThreads * kCalls) * kCount);
}

OCTET_CUDA_TEST("threads: a StreamGuard changes the current stream of its own thread only") {
  const Device gpu = Device::cuda(0);
  const cudaStream_t shared = current_stream(0);
  cudaStream_t mine = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&mine, cudaStreamNonBlocking) == cudaSuccess);
  {
    StreamGuard guard(gpu, mine);
    CHECK(current_stream(0) == mine);
    cudaStream_t seen_elsewhere = nullptr;
    std::thread([&] { seen_elsewhere = current_stream(0); }).join();
    CHECK(seen_elsewhere == shared);
  }
  CHECK(current_stream(0) == shared);
  CHECK(cudaStreamDestroy(mine) == cudaSuccess);
}
