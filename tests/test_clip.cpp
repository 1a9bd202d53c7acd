// Tests of the clip family: percentile_clipping against bitsandbytes' golden sequence, the history
// semantics, f64 references over odd sizes and misaligned data, CPU against CUDA, determinism, the
// ClipState form (device step, poisoned outputs, CUDA-graph capture and replay), scale_by_, and
// every bad-input error.
// Float32 comparisons use torch's assert_close defaults: |a - e| <= 1e-5 + 1.3e-6 |e|.
// The port of test_percentile_clipping is in tests/test_deprecated.cpp.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "tests/helpers.hpp"

using namespace octet;

namespace {

constexpr double kRtol = 1.3e-6, kAtol = 1e-5;
const DType kGradTypes[] = {DType::f32, DType::f16, DType::bf16};

bool close(double a, double e) {
  if (std::isnan(a) || std::isnan(e)) return std::isnan(a) && std::isnan(e);
  return std::fabs(a - e) <= kAtol + kRtol * std::fabs(e);
}

void check_close(const std::vector<double>& a, const std::vector<double>& e, const char* what) {
  REQUIRE(a.size() == e.size());
  for (size_t i = 0; i < a.size(); ++i) {
    CAPTURE(what);
    CAPTURE(i);
    CHECK_MESSAGE(close(a[i], e[i]), a[i], " vs expected ", e[i]);
  }
}

float f32(const Tensor& scalar) { return scalar.to_vector<float>()[0]; }

// A copy of src whose data starts `shift` elements into a larger allocation (misaligned for shift
// not a multiple of 16 bytes).
Tensor shifted(const Tensor& src, int64_t shift) {
  Tensor buf = Tensor::zeros({src.numel() + shift}, src.dtype(), src.device());
  Tensor v = test::view(buf, shift, src.numel()).reshape(src.shape());
  v.copy_(src);
  return v;
}

double sum_squares(const Tensor& g) {
  double s = 0;
  for (double v : test::values(g)) s += v * v;
  return s;
}

// Host model of one step on a history of squared norms (docs/clip.md, 'Semantics').
struct Expected {
  double gnorm, clip, scale;
};
Expected model_step(std::vector<float>& vec, double sumsq, int64_t step, int percentile) {
  const float sum = static_cast<float>(sumsq);
  const size_t slot = static_cast<size_t>(step % 100);
  for (size_t i = 0; i < 100; ++i) {
    if (i == slot) vec[i] = sum;
    else if (step == 1) vec[i] = vec[i] + sum;
  }
  std::vector<float> sorted = vec;
  std::stable_sort(sorted.begin(), sorted.end(), [](float a, float b) { return !std::isnan(a) && (std::isnan(b) || a < b); });
  const float g = std::sqrt(vec[slot]), c = std::sqrt(sorted[static_cast<size_t>(percentile)]);
  return {g, c, g > c ? double(c / g) : 1.0};
}

void check_result(const ClipResult& r, const Expected& e) {
  CHECK_MESSAGE(close(f32(r.gnorm), e.gnorm), f32(r.gnorm), " vs ", e.gnorm);
  CHECK_MESSAGE(close(f32(r.clip_value), e.clip), f32(r.clip_value), " vs ", e.clip);
  CHECK_MESSAGE(close(f32(r.scale), e.scale), f32(r.scale), " vs ", e.scale);
}

std::vector<double> as_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// The scale assertion as test_percentile_clipping means it: 1 when gnorm <= clip, else clip / gnorm.
void check_scale_rule(const ClipResult& r) {
  const float g = f32(r.gnorm), c = f32(r.clip_value), s = f32(r.scale);
  if (g <= c) CHECK(s == 1.0f);
  else CHECK(s == c / g);
}

// --- golden sequence --------------------------------------------------------------------------

void golden_sequence(Device d) {
  const std::vector<float> returns = test::golden("pclip.f32.returns").to_vector<float>();
  REQUIRE(returns.size() == 36);
  Tensor vec = Tensor::zeros({100}, DType::f32, d);
  ClipState state = ClipState::create(d);
  for (int64_t k = 1; k <= 12; ++k) {
    CAPTURE(k);
    const Tensor grad = test::golden(cat("pclip.f32.grad.", k)).to(d);
    const ClipResult r = percentile_clipping(grad, vec, k);
    const auto expected_vec = test::values(test::golden(cat("pclip.f32.gnorm_vec.", k)));
    check_close(test::values(vec), expected_vec, "gnorm_vec");
    const size_t row = static_cast<size_t>(k - 1) * 3;
    check_result(r, {returns[row], returns[row + 1], returns[row + 2]});
    // The state form runs the same kernels: same bits.
    const ClipResult& s = percentile_clipping(grad, state);
    CHECK(test::bitwise_equal(state.gnorm_vec, vec));
    CHECK(test::bitwise_equal(s.gnorm, r.gnorm));
    CHECK(test::bitwise_equal(s.clip_value, r.clip_value));
    CHECK(test::bitwise_equal(s.scale, r.scale));
  }
  CHECK(state.step.item() == 13);
}

OCTET_TEST_BOTH("percentile_clipping golden pclip.f32 (12 steps)", golden_sequence)

// --- semantics ---------------------------------------------------------------------------------

void history_semantics(Device d) {
  manual_seed(11);
  // step 1 on a history that is not zero: slot 1 is cleared, every other slot gets old + sum.
  std::vector<float> model = rand({100}).to_vector<float>();
  for (float& v : model) v *= 50.0f;
  Tensor vec = Tensor::from_vector(model, d);
  Tensor g = randn({37}, DType::f32, d);
  Expected e = model_step(model, sum_squares(g), 1, 5);
  check_result(percentile_clipping(g, vec, 1), e);
  check_close(test::values(vec), as_double(model), "gnorm_vec after step 1");
  CHECK(close(vec.to_vector<float>()[1], sum_squares(g)));
  // later steps touch only slot step % 100 (101 -> slot 1, 250 -> slot 50); other bits unchanged.
  for (int64_t step : {2, 101, 250, 99}) {
    CAPTURE(step);
    const std::vector<float> before = vec.to_vector<float>();
    Tensor gs = scale(randn({1001}, DType::f32, d), double(step % 7));
    e = model_step(model, sum_squares(gs), step, 5);
    check_result(percentile_clipping(gs, vec, step), e);
    const std::vector<float> after = vec.to_vector<float>();
    for (size_t i = 0; i < 100; ++i)
      if (i != static_cast<size_t>(step % 100)) CHECK(std::memcmp(&after[i], &before[i], sizeof(float)) == 0);
    check_close(as_double(after), as_double(model), "gnorm_vec");
  }
  // percentile is an index into the sorted squared norms: 0 -> smallest, 99 -> largest.
  std::vector<float> ramp(100);
  for (size_t i = 0; i < 100; ++i) ramp[i] = static_cast<float>((i * 37) % 100 + 1);  // a permutation of 1..100
  for (int p : {0, 5, 42, 99}) {
    CAPTURE(p);
    std::vector<float> m = ramp;
    Tensor v = Tensor::from_vector(ramp, d);
    Tensor gp = Tensor::full({3, 3}, 2.0, DType::f32, d);  // squared norm 36 into slot 7
    const ClipResult r = percentile_clipping(gp, v, 7, p);
    check_result(r, model_step(m, 36.0, 7, p));
    check_scale_rule(r);
  }
  // empty gradient: norm 0 (scale 1, since 0 <= clip).
  Tensor v0 = Tensor::full({100}, 4.0, DType::f32, d);
  const ClipResult r0 = percentile_clipping(Tensor::empty({0, 5}, DType::bf16, d), v0, 3);
  CHECK(f32(r0.gnorm) == 0.0f);
  CHECK(f32(r0.clip_value) == 2.0f);
  CHECK(f32(r0.scale) == 1.0f);
  CHECK(v0.to_vector<float>()[3] == 0.0f);
  // gnorm == clip == 0 (zero gradients from the start): scale 1, never 0 / 0.
  Tensor vz = Tensor::zeros({100}, DType::f32, d);
  const ClipResult rz = percentile_clipping(Tensor::zeros({8}, DType::f16, d), vz, 1);
  CHECK(f32(rz.gnorm) == 0.0f);
  CHECK(f32(rz.clip_value) == 0.0f);
  CHECK(f32(rz.scale) == 1.0f);
  // gnorm above the clip value: scale = clip / gnorm.
  Tensor v1 = Tensor::full({100}, 1.0, DType::f32, d);
  const ClipResult r1 = percentile_clipping(Tensor::full({4}, 2.0, DType::f32, d), v1, 5);
  CHECK(f32(r1.gnorm) == 4.0f);
  CHECK(f32(r1.clip_value) == 1.0f);
  CHECK(f32(r1.scale) == 0.25f);
  // NaN sorts last (as torch.sort): with one NaN in the history, percentile 99 picks it.
  std::vector<float> with_nan(100, 9.0f);
  with_nan[40] = NAN;
  Tensor vn = Tensor::from_vector(with_nan, d);
  const ClipResult rn = percentile_clipping(Tensor::full({1}, 3.0, DType::f32, d), vn, 2, 99);
  CHECK(std::isnan(f32(rn.clip_value)));
  CHECK(f32(rn.gnorm) == 3.0f);
  CHECK(f32(rn.scale) == 1.0f);  // 3 > NaN is false, as bitsandbytes' comparison
}
OCTET_TEST_BOTH("percentile_clipping history semantics", history_semantics)

// Odd sizes, partial tiles, the one-kernel/two-kernel boundary and misaligned data against an
// f64 reference of the squared norm.
void sizes_and_alignment(Device d) {
  manual_seed(5);
  for (DType t : kGradTypes)
    for (int64_t n : {1, 3, 7, 16, 1000, 4095, 4096, 4097, 8191, 8192, 8193, 16384, 16385, 100003, (1 << 20) + 7})
      for (int64_t shift : {0, 1, 3}) {
        CAPTURE(dtype_name(t));
        CAPTURE(n);
        CAPTURE(shift);
        Tensor g = shifted(randn({n}, t, d), shift);
        std::vector<float> model(100, 0.0f);
        Tensor vec = Tensor::zeros({100}, DType::f32, d);
        const double ss = sum_squares(g);
        check_result(percentile_clipping(g, vec, 1), model_step(model, ss, 1, 5));
        Tensor g2 = shifted(scale(randn({n}, t, d), 3.0), shift);
        check_result(percentile_clipping(g2, vec, 2), model_step(model, sum_squares(g2), 2, 5));
        check_close(test::values(vec), as_double(model), "gnorm_vec");
      }
}
OCTET_TEST_BOTH("percentile_clipping sizes and alignment vs f64", sizes_and_alignment)

OCTET_CUDA_TEST("percentile_clipping CPU vs CUDA") {
  manual_seed(9);
  for (DType t : kGradTypes)
    for (int64_t n : {0, 5, 4097, 65537, 3000001}) {
      CAPTURE(dtype_name(t));
      CAPTURE(n);
      Tensor vc = scale(rand({100}), 10.0), vg = vc.to(Device::cuda(0));
      for (int64_t step : {1, 2, 3}) {
        Tensor g = randn({n}, t);
        const ClipResult rc = percentile_clipping(g, vc, step, 7);
        const ClipResult rg = percentile_clipping(shifted(g.to(Device::cuda(0)), step - 1), vg, step, 7);
        check_close(test::values(rg.gnorm), test::values(rc.gnorm), "gnorm");
        check_close(test::values(rg.clip_value), test::values(rc.clip_value), "clip_value");
        check_close(test::values(rg.scale), test::values(rc.scale), "scale");
        check_close(test::values(vg), test::values(vc), "gnorm_vec");
      }
    }
}

void determinism(Device d) {
  manual_seed(3);
  for (DType t : {DType::f32, DType::bf16}) {
    CAPTURE(dtype_name(t));
    Tensor g = shifted(randn({(int64_t(1) << 24) + 5}, t, d), 1);
    Tensor start = scale(rand({100}, DType::f32, d), 1e6);
    Tensor v1 = start.clone(), v2 = start.clone();
    const ClipResult a = percentile_clipping(g, v1, 1), b = percentile_clipping(g, v2, 1);
    CHECK(test::bitwise_equal(v1, v2));
    CHECK(test::bitwise_equal(a.gnorm, b.gnorm));
    CHECK(test::bitwise_equal(a.clip_value, b.clip_value));
    CHECK(test::bitwise_equal(a.scale, b.scale));
    const ClipResult c = percentile_clipping(g, v1, 2);
    CHECK(test::bitwise_equal(c.gnorm, a.gnorm));  // step 1 and step 2 saw the same squared norm
  }
}
OCTET_TEST_BOTH("percentile_clipping determinism (same input, same bits)", determinism)

// --- ClipState ---------------------------------------------------------------------------------

void poison(ClipResult& r) {
  for (Tensor* t : {&r.gnorm, &r.clip_value, &r.scale}) t->copy_(test::poisoned({}, DType::f32, t->device()));
}

void state_form(Device d) {
  manual_seed(21);
  ClipState state = ClipState::create(d, 7);
  CHECK(state.step.dtype() == DType::i64);
  CHECK(state.step.item() == 7);
  std::vector<float> model(100, 0.0f);
  Tensor vec = Tensor::zeros({100}, DType::f32, d);
  for (int64_t step = 7; step < 12; ++step) {
    CAPTURE(step);
    Tensor g = scale(randn({33, 17}, DType::f16, d), double(step));
    poison(state.result);
    const ClipResult& r = percentile_clipping(g, state, 3);
    CHECK(&r == &state.result);
    const ClipResult e = percentile_clipping(g, vec, step, 3);
    check_result(r, model_step(model, sum_squares(g), step, 3));
    CHECK(test::bitwise_equal(r.gnorm, e.gnorm));
    CHECK(test::bitwise_equal(r.clip_value, e.clip_value));
    CHECK(test::bitwise_equal(r.scale, e.scale));
    CHECK(test::bitwise_equal(state.gnorm_vec, vec));
    CHECK(state.step.item() == step + 1);
  }
  // Members may be replaced with the caller's own tensors.
  state.result.scale = Tensor::zeros({}, DType::f32, d);
  state.step = Tensor::full({}, 1.0, DType::i64, d);
  state.gnorm_vec = Tensor::full({100}, 2.0, DType::f32, d);
  percentile_clipping(Tensor::full({2}, 1.0, DType::f32, d), state);
  CHECK(state.gnorm_vec.to_vector<float>()[50] == 4.0f);  // step 1: old 2 + 2
  CHECK(f32(state.result.scale) == 1.0f);
}
OCTET_TEST_BOTH("percentile_clipping ClipState form", state_form)

TEST_CASE("percentile_clipping ClipState step < 1 throws [cpu]") {
  ClipState state = ClipState::create(Device::cpu());
  state.step.fill_(0);
  CHECK_THROWS_WITH_AS(percentile_clipping(Tensor::ones({4}), state), doctest::Contains("argument 'state.step'"), Error);
  CHECK(test::values(state.gnorm_vec) == std::vector<double>(100, 0.0));
}

OCTET_CUDA_TEST("percentile_clipping ClipState step < 1 gives NaN, history and step unchanged") {
  const Device d = Device::cuda(0);
  for (int64_t n : {4, 100000}) {
    ClipState state = ClipState::create(d);
    state.gnorm_vec.fill_(3.0);
    state.step.fill_(-4);
    percentile_clipping(Tensor::ones({n}, DType::f32, d), state);
    CHECK(std::isnan(f32(state.result.gnorm)));
    CHECK(std::isnan(f32(state.result.clip_value)));
    CHECK(std::isnan(f32(state.result.scale)));
    CHECK(test::values(state.gnorm_vec) == std::vector<double>(100, 3.0));
    CHECK(state.step.item() == -4);
  }
}

// A user stream made current for the test's lifetime (tensors must die before it does).
struct UserStream {
  cudaStream_t s = nullptr;
  UserStream() {
    REQUIRE(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
    set_current_stream(0, s);
  }
  ~UserStream() {
    cudaStreamSynchronize(s);
    set_current_stream(0, nullptr);
    cudaStreamDestroy(s);
  }
};

OCTET_CUDA_TEST("percentile_clipping CUDA graph capture and replay") {
  const Device d = Device::cuda(0);
  UserStream user;
  for (int64_t n : {16, 100003}) {
    CAPTURE(n);
    manual_seed(13);
    std::vector<Tensor> grads;
    for (int k = 0; k < 7; ++k) grads.push_back(scale(randn({n}, DType::bf16, d), 1.0 + (k % 3) * 4.0));
    Tensor grad = Tensor::zeros({n}, DType::bf16, d);
    ClipState state = ClipState::create(d);
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    REQUIRE(cudaStreamBeginCapture(user.s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
    percentile_clipping(grad, state, 5);
    scale_by_(grad, state.result.scale);
    REQUIRE(cudaStreamEndCapture(user.s, &graph) == cudaSuccess);
    REQUIRE(cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess);
    Tensor vec = Tensor::zeros({100}, DType::f32, d);
    for (int64_t k = 0; k < 7; ++k) {
      CAPTURE(k);
      Tensor eager_grad = grads[static_cast<size_t>(k)].clone();
      const ClipResult e = percentile_clipping(eager_grad, vec, k + 1, 5);
      scale_by_(eager_grad, e.scale);
      poison(state.result);
      grad.copy_(grads[static_cast<size_t>(k)]);
      REQUIRE(cudaGraphLaunch(exec, user.s) == cudaSuccess);
      CHECK(test::bitwise_equal(state.result.gnorm, e.gnorm));
      CHECK(test::bitwise_equal(state.result.clip_value, e.clip_value));
      CHECK(test::bitwise_equal(state.result.scale, e.scale));
      CHECK(test::bitwise_equal(state.gnorm_vec, vec));
      CHECK(test::bitwise_equal(grad, eager_grad));
      CHECK(state.step.item() == k + 2);
    }
    CHECK(f32(state.result.scale) <= 1.0f);
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
  }
}

// --- scale_by_ ---------------------------------------------------------------------------------

void scale_by(Device d) {
  manual_seed(17);
  for (DType t : kGradTypes)
    for (int64_t n : {0, 1, 9, 4099, 100001})
      for (int64_t shift : {0, 2}) {
        CAPTURE(dtype_name(t));
        CAPTURE(n);
        CAPTURE(shift);
        Tensor g = shifted(randn({n}, t, d), shift);
        std::vector<float> prod = g.to_vector<float>();
        const float s = 0.3712f;
        for (float& v : prod) v *= s;
        const Tensor expected = Tensor::from_vector(prod, Shape{n}).to(t);
        const uint64_t version = g.impl()->storage->version;
        scale_by_(g, Tensor::full({}, s, DType::f32, d));
        CHECK(test::bitwise_equal(g.to(Device::cpu()), expected));
        CHECK(g.impl()->storage->version == version + 1);  // an in-place write (retires amax hints)
        // scale exactly 1: nothing written (poisoned NaN bits stay as they are).
        Tensor p = shifted(test::poisoned({n}, t, d), shift);
        scale_by_(p, Tensor::ones({}, DType::f32, d));
        CHECK(test::bitwise_equal(p, shifted(test::poisoned({n}, t, d), shift)));
      }
}
OCTET_TEST_BOTH("scale_by_ multiplies in place by a device scalar", scale_by)

// --- errors ------------------------------------------------------------------------------------

void errors(Device d) {
  Tensor g = Tensor::ones({4, 4}, DType::f32, d);
  Tensor vec = Tensor::zeros({100}, DType::f32, d);
  CHECK_THROWS_WITH_AS(percentile_clipping(g, vec, 0), doctest::Contains("argument 'step': expected a step >= 1"), Error);
  CHECK_THROWS_WITH_AS(percentile_clipping(g, vec, -3), doctest::Contains("got -3"), Error);
  CHECK_THROWS_WITH_AS(percentile_clipping(g, vec, 1, -1), doctest::Contains("argument 'percentile'"), Error);
  CHECK_THROWS_WITH_AS(percentile_clipping(g, vec, 1, 100), doctest::Contains("got 100"), Error);
  for (Shape bad : {Shape{99}, Shape{101}, Shape{10, 10}, Shape{}}) {
    Tensor v = Tensor::zeros(bad, DType::f32, d);
    CHECK_THROWS_WITH_AS(percentile_clipping(g, v, 1), doctest::Contains("argument 'gnorm_vec': expected shape (100,)"), Error);
  }
  for (DType bad : {DType::f64, DType::f16, DType::i32}) {
    Tensor v = Tensor::zeros({100}, bad, d);
    CHECK_THROWS_WITH_AS(percentile_clipping(g, v, 1), doctest::Contains("argument 'gnorm_vec': expected dtype f32"), Error);
  }
  for (DType bad : {DType::f64, DType::u8, DType::i32, DType::f8_e4m3}) {
    CHECK_THROWS_WITH_AS(percentile_clipping(Tensor::zeros({4}, bad, d), vec, 1),
                         doctest::Contains("argument 'grad': expected dtype f32, f16 or bf16"), Error);
    CHECK_THROWS_WITH_AS(scale_by_(Tensor::zeros({4}, bad, d), Tensor::ones({}, DType::f32, d)),
                         doctest::Contains("scale_by_: argument 'grad'"), Error);
  }
  CHECK_THROWS_WITH_AS(percentile_clipping(Tensor(), vec, 1), doctest::Contains("argument 'grad'"), Error);
  CHECK(test::values(vec) == std::vector<double>(100, 0.0));  // failed calls wrote nothing

  ClipState state = ClipState::create(d);
  CHECK_THROWS_WITH_AS(ClipState::create(d, 0), doctest::Contains("argument 'first_step'"), Error);
  CHECK_THROWS_WITH_AS(percentile_clipping(g, state, 100), doctest::Contains("argument 'percentile'"), Error);
  ClipState bad = state;
  bad.step = Tensor::ones({}, DType::i32, d);
  CHECK_THROWS_WITH_AS(percentile_clipping(g, bad), doctest::Contains("argument 'state.step': expected dtype i64"), Error);
  bad = state;
  bad.step = Tensor::ones({1}, DType::i64, d);
  CHECK_THROWS_WITH_AS(percentile_clipping(g, bad), doctest::Contains("argument 'state.step': expected shape ()"), Error);
  bad = state;
  bad.gnorm_vec = Tensor::zeros({50}, DType::f32, d);
  CHECK_THROWS_WITH_AS(percentile_clipping(g, bad), doctest::Contains("argument 'state.gnorm_vec'"), Error);
  bad = state;
  bad.result.clip_value = Tensor::zeros({1}, DType::f32, d);
  CHECK_THROWS_WITH_AS(percentile_clipping(g, bad), doctest::Contains("argument 'state.result.clip_value'"), Error);
  bad = state;
  bad.result.scale = Tensor::zeros({}, DType::f16, d);
  CHECK_THROWS_WITH_AS(percentile_clipping(g, bad), doctest::Contains("argument 'state.result.scale'"), Error);

  CHECK_THROWS_WITH_AS(scale_by_(g, Tensor::ones({1}, DType::f32, d)), doctest::Contains("argument 'scale': expected shape ()"), Error);
  CHECK_THROWS_WITH_AS(scale_by_(g, Tensor::ones({}, DType::f64, d)), doctest::Contains("argument 'scale': expected dtype f32"), Error);
  // a scale kept inside the gradient's buffer would change while it is applied (on CUDA)
  Tensor buffer = Tensor::ones({5}, DType::f32, d);
  CHECK_THROWS_WITH_AS(scale_by_(buffer.narrow(0, 0, 4), buffer.narrow(0, 3, 1).reshape({})),
                       doctest::Contains("scale_by_: argument 'scale': expected a scalar apart from grad"), Error);
  scale_by_(buffer.narrow(0, 0, 4), buffer.narrow(0, 4, 1).reshape({}));  // right after grad: apart
  Tensor tracked = Tensor::ones({3}, DType::f32, d);
  tracked.requires_grad_();
  CHECK_THROWS_WITH_AS(scale_by_(tracked, Tensor::ones({}, DType::f32, d)), doctest::Contains("scale_by_"), Error);
  NoGradGuard no_grad;
  scale_by_(tracked, Tensor::full({}, 2.0, DType::f32, d));
  CHECK(test::values(tracked) == std::vector<double>(3, 2.0));
}
OCTET_TEST_BOTH("percentile_clipping and scale_by_ errors", errors)

OCTET_CUDA_TEST("percentile_clipping errors: devices") {
  const Device d = Device::cuda(0);
  Tensor g = Tensor::ones({4}, DType::f32, d);
  Tensor host_vec = Tensor::zeros({100});
  CHECK_THROWS_WITH_AS(percentile_clipping(g, host_vec, 1), doctest::Contains("argument 'gnorm_vec': expected a tensor on cuda:0"), Error);
  Tensor dev_vec = Tensor::zeros({100}, DType::f32, d);
  CHECK_THROWS_WITH_AS(percentile_clipping(Tensor::ones({4}), dev_vec, 1), doctest::Contains("expected a tensor on cpu"), Error);
  ClipState state = ClipState::create(d);
  state.step = Tensor::ones({}, DType::i64);
  CHECK_THROWS_WITH_AS(percentile_clipping(g, state), doctest::Contains("argument 'state.step': expected a tensor on cuda:0"), Error);
  state = ClipState::create(d);
  state.result.gnorm = Tensor::zeros({});
  CHECK_THROWS_WITH_AS(percentile_clipping(g, state), doctest::Contains("argument 'state.result.gnorm'"), Error);
  CHECK_THROWS_WITH_AS(scale_by_(g, Tensor::ones({})), doctest::Contains("argument 'scale': expected a tensor on cuda:0"), Error);
}

// --- a structured gradient with an exact norm; more than 2^31 elements --------------------------
// grad has n = low + 40961 elements, 3 elements into its allocation (misaligned: scalar head,
// 16-byte packs, partial last tile, scalar tail): 1 below element low, 8 from there on, 1024 last.
// Every per-thread f32 accumulator and the f64 combination then hold integers below 2^24 and 2^53,
// so the squared norm is exactly S = low + 64 (40961 - 1) + 2^20 and gnorm is exactly
// sqrtf(float(S)). With low = 2^31, elements past 2^31 that were skipped, read twice or read from
// below 2^31 would move S by at least 63 * 40960 (or 2^20 for the last one), far more than
// float(S)'s rounding (128). With the history at float(S) / 4, step 2 gives scale exactly 0.5;
// scale_by_ then halves every element exactly (checked on slices at the start, across element low
// and at the end, and in full by the norm of the result, exactly S / 4, through the ClipState form).
void structured_norm(Device d, int64_t low) {
  const int64_t n = low + 40961;
  const double S = double(low) + 64.0 * double(n - low - 1) + 1048576.0;
  const float sf = static_cast<float>(S), gnorm = std::sqrt(sf);
  for (DType t : {DType::f32, DType::bf16}) {
    CAPTURE(dtype_name(t));
    Tensor grad;
    {
      const Tensor buf = Tensor::empty({n + 3}, t, d);
      grad = test::view(buf, 3, n);
    }
    grad.fill_(1.0);
    test::view(grad, low, n - low).fill_(8.0);
    test::view(grad, n - 1, 1).fill_(1024.0);

    Tensor vec = Tensor::full({100}, sf / 4, DType::f32, d);
    const ClipResult r = percentile_clipping(grad, vec, 2, 5);
    CHECK(f32(r.gnorm) == gnorm);
    CHECK(f32(r.clip_value) == gnorm / 2);
    CHECK(f32(r.scale) == 0.5f);
    std::vector<float> hist(100, sf / 4);
    hist[2] = sf;
    CHECK(vec.to_vector<float>() == hist);

    scale_by_(grad, r.scale);
    struct Slice { int64_t off, len; };
    for (Slice sl : {Slice{0, 5000}, Slice{low - 3000, 6000}, Slice{n - 5000, 5000}}) {
      CAPTURE(sl.off);
      const auto got = test::view(grad, sl.off, sl.len).to_vector<float>();
      int64_t bad = 0;
      for (int64_t i = 0; i < sl.len; ++i) {
        const int64_t at = sl.off + i;
        bad += got[static_cast<size_t>(i)] != (at == n - 1 ? 512.0f : at >= low ? 4.0f : 0.5f);
      }
      CHECK(bad == 0);
    }
    ClipState state = ClipState::create(d);
    percentile_clipping(grad, state, 5);
    CHECK(f32(state.result.gnorm) == gnorm / 2);
    CHECK(f32(state.result.scale) == 1.0f);
    CHECK(state.step.item() == 2);
  }
}
void structured_norm_small(Device d) { structured_norm(d, int64_t{1} << 20); }
OCTET_TEST_BOTH("percentile_clipping and scale_by_ on a structured gradient of 2^20 + 40961 elements: exact norm", structured_norm_small)

// Needs about 9 GB of GPU memory.
OCTET_LARGE_TEST("percentile_clipping and scale_by_ on 2^31 + 40961 elements (OCTET_LARGE=1)") {
  structured_norm(Device::cuda(0), int64_t{1} << 31);
}

}  // namespace
