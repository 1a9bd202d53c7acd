// Tests of the quant family, part two: CPU semantics against the definition (blockwise and global
// quantize, dequantize), golden outputs of bitsandbytes 0.49.2 with the documented reciprocal
// deltas identified, edge inputs (zero blocks, NaN, Inf, subnormal and huge absmax, empty tensors,
// full tiles on CUDA), bad arguments, nested absmax and fake-quantize. The code tables and the
// index rule are in test_quant.cpp; CPU vs CUDA and the > 2^31-element case in test_quant_cuda.cpp.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "tests/quant_test_helpers.hpp"

using namespace octet;
using namespace octet::quant_test;

// ================================ CPU semantics ================================

namespace {

// Blockwise codes/absmax from the definition: absmax = max |v| ignoring NaN, x = v * (1/absmax)
// (normal reciprocal range), index by bitsandbytes' search; zero blocks -> the code of 0.
void check_blockwise_definition(const Tensor& A, const Quantized& q, const Code& code, int64_t bs) {
  const auto v = A.to_vector<float>();
  const auto c = q.codes.to_vector<uint8_t>();
  const auto am = q.state.absmax.to_vector<float>();
  const float* tab = code.values().data();
  REQUIRE(am.size() == static_cast<size_t>((v.size() + bs - 1) / bs));
  int64_t bad_amax = 0, bad_code = 0;
  for (size_t b = 0; b < am.size(); ++b) {
    float m = 0.0f;
    for (size_t i = b * bs; i < std::min(v.size(), (b + 1) * bs); ++i)
      if (std::fabs(v[i]) > m) m = std::fabs(v[i]);
    bad_amax += bits(m) != bits(am[b]);
    const float r = m > 0 ? 1.0f / m : 0.0f;
    for (size_t i = b * bs; i < std::min(v.size(), (b + 1) * bs); ++i) bad_code += c[i] != bnb_index(tab, v[i] * r);
  }
  CHECK(bad_amax == 0);
  CHECK(bad_code == 0);
}

}  // namespace

TEST_CASE("CPU quantize_blockwise follows the definition (every dtype, every blocksize, partial blocks)") {
  manual_seed(1);
  for (DType t : kDtypes) {
    for (int64_t bs : kBlocksizes) {
      CAPTURE(dtype_name(t));
      CAPTURE(bs);
      const Tensor A = randn({3 * bs + 17}).to(t);
      const Quantized q = quantize_blockwise(A, Code(), bs);
      CHECK(q.codes.shape() == A.shape());
      CHECK(q.codes.dtype() == DType::u8);
      CHECK(q.state.absmax.shape() == Shape{4});
      CHECK(q.state.blocksize == bs);
      CHECK(q.state.dtype == t);
      check_blockwise_definition(A, q, Code(), bs);
    }
  }
  const Tensor A = randn({5, 7, 33});
  check_blockwise_definition(A, quantize_blockwise(A, Code::fp8_e5m2(), 64), Code::fp8_e5m2(), 64);
}

TEST_CASE("CPU global quantize: x = A / max|A| (IEEE), indices by the binary search") {
  manual_seed(2);
  for (DType t : kDtypes) {
    const Tensor A = randn({301, 3}).to(t);
    const Quantized q = quantize(A);
    const auto v = A.to_vector<float>();
    float m = 0;
    for (float x : v) m = std::max(m, std::fabs(x));
    CHECK(q.state.absmax.to_vector<float>() == std::vector<float>{m});
    CHECK(q.state.blocksize == 0);
    const auto c = q.codes.to_vector<uint8_t>();
    int64_t bad = 0;
    for (size_t i = 0; i < v.size(); ++i) bad += c[i] != bnb_index(Code().values().data(), v[i] / m);
    CHECK(bad == 0);
  }
}

namespace {

// Dequantize by the definition: code[q] * absmax in f32, then RNE to out_t.
Tensor dequant_reference(const Tensor& codes, const std::vector<float>& absmax, int64_t bs, const Code& code,
                         DType out_t) {
  const auto c = codes.to_vector<uint8_t>();
  std::vector<float> y(c.size());
  for (size_t i = 0; i < c.size(); ++i) y[i] = code.values()[c[i]] * absmax[bs ? i / bs : 0];
  return Tensor::from_vector(y, codes.shape()).to(out_t);
}

}  // namespace

TEST_CASE("dequantize: code[q] * absmax in f32, rounded to the state's dtype or out_dtype") {
  manual_seed(3);
  for (DType t : kDtypes) {
    const Tensor A = randn({1000}).to(t);
    const Quantized qb = quantize_blockwise(A, Code(), 64);
    const auto am = qb.state.absmax.to_vector<float>();
    CHECK(
        test::bitwise_equal(dequantize_blockwise(qb.codes, qb.state), dequant_reference(qb.codes, am, 64, Code(), t)));
    for (DType o : kDtypes)
      CHECK(test::bitwise_equal(dequantize_blockwise(qb.codes, qb.state, o),
                                dequant_reference(qb.codes, am, 64, Code(), o)));
    const Quantized qg = quantize(A);
    CHECK(test::bitwise_equal(dequantize(qg.codes, qg.state),
                              dequant_reference(qg.codes, qg.state.absmax.to_vector<float>(), 0, Code(), t)));
  }
}

// ================================ golden ================================

namespace {

// bitsandbytes' reciprocal is one of the two floats around 1/absmax; the one octet does not use.
float other_reciprocal(float absmax) {
  const float r = 1.0f / absmax;
  const bool above = static_cast<double>(r) * absmax > 1.0;  // r > exact 1/absmax
  return std::nextafter(r, above ? 0.0f : kInf);
}

void golden_blockwise(Device dev, const std::string& key, const Code& code, int64_t bs) {
  CAPTURE(key);
  const Tensor in = test::golden(key + ".in");
  const auto gcodes = test::golden(key + ".codes").to_vector<uint8_t>();
  const auto gabs = test::golden(key + ".absmax").to_vector<float>();
  const Tensor gout = test::golden(key + ".out");
  const Quantized q = quantize_blockwise(in.to(dev), code, bs);
  const auto c = q.codes.to_vector<uint8_t>();
  const auto am = q.state.absmax.to_vector<float>();
  const auto v = in.to_vector<float>();
  REQUIRE(am.size() == gabs.size());
  int64_t mismatches = 0, explained = 0, bad = 0;
  for (size_t b = 0; b < am.size(); ++b) {
    CHECK(bits(am[b]) == bits(gabs[b]));
    const size_t lo = b * bs, hi = std::min(v.size(), (b + 1) * bs);
    bool differs = false;
    for (size_t i = lo; i < hi; ++i) differs |= c[i] != gcodes[i];
    if (!differs) continue;
    if (am[b] == 0.0f) {  // zero block: bitsandbytes gives index 0, octet the code of 0
      for (size_t i = lo; i < hi; ++i) bad += gcodes[i] != 0 || c[i] != 127;
      continue;
    }
    const float r_alt = other_reciprocal(am[b]);
    for (size_t i = lo; i < hi; ++i) {
      bad += bnb_index(code.values().data(), v[i] * r_alt) != gcodes[i];
      if (c[i] != gcodes[i]) {
        ++mismatches;
        bad += std::abs(int{c[i]} - int{gcodes[i]}) != 1;
        explained += bnb_index(code.values().data(), v[i] * r_alt) == gcodes[i];
      }
    }
  }
  MESSAGE(key << " on " << dev.str() << ": " << mismatches << " of " << v.size()
              << " codes one index apart, all explained by bitsandbytes' approximate reciprocal: " << explained);
  CHECK(bad == 0);
  CHECK(explained == mismatches);
  CHECK(mismatches * 100 <= static_cast<int64_t>(v.size()));  // rare: about 1% of elements at most
  // Dequantize bitsandbytes' own codes: bit for bit its output (no FTZ case arises here).
  QuantState st = q.state;
  st.absmax = test::golden(key + ".absmax").to(dev);
  const Tensor gc = test::golden(key + ".codes").to(dev);
  CHECK(test::bitwise_equal(dequantize_blockwise(gc, st), gout));
  // Our dequantized output equals bitsandbytes' wherever the codes agree.
  const auto ours = dequantize_blockwise(q.codes, q.state).to_vector<float>();
  const auto theirs = gout.to_vector<float>();
  int64_t out_bad = 0;
  for (size_t i = 0; i < v.size(); ++i) out_bad += c[i] == gcodes[i] && bits(ours[i]) != bits(theirs[i]);
  CHECK(out_bad == 0);
}

void golden_global(Device dev, const std::string& key) {
  CAPTURE(key);
  const Quantized q = quantize(test::golden(key + ".in").to(dev));
  CHECK(test::bitwise_equal(q.codes, test::golden(key + ".codes")));
  CHECK(test::bitwise_equal(q.state.absmax, test::golden(key + ".absmax")));
  CHECK(test::bitwise_equal(dequantize(q.codes, q.state), test::golden(key + ".out")));
}

void golden_all(Device dev) {
  golden_blockwise(dev, "block.f32.bs64.n5000", Code(), 64);
  golden_blockwise(dev, "block.f32.bs256.n5000", Code(), 256);
  golden_blockwise(dev, "block.f32.bs4096.n5000", Code(), 4096);
  golden_blockwise(dev, "block.f16.bs64.n3000", Code(), 64);
  golden_blockwise(dev, "block.bf16.bs128.n3000", Code(), 128);
  golden_blockwise(dev, "block.f32.fp8e4m3.bs256.n3000", Code::fp8_e4m3(), 256);
  golden_global(dev, "global.randn_64x64");
  golden_global(dev, "global.rand_64x64");
}

}  // namespace

OCTET_TEST_BOTH("golden bitsandbytes 0.49.2 blockwise and global", golden_all)

// ================================ edge inputs, zero blocks, sizes ================================

namespace {

// Blocks of 64: zeros, NaNs, ±Inf, subnormals, ±1e30, table midpoints at absmax 1 and 4 (exact
// reciprocal: x lands on the midpoints), at absmax 3 and 2^100, mixed signs.
std::vector<float> edge_values() {
  const auto& code = Code().values();
  std::vector<float> v;
  auto block = [&](std::vector<float> b) {
    b.resize(64, b.empty() ? 0.0f : b.back());
    v.insert(v.end(), b.begin(), b.end());
  };
  block({0.0f});
  block({-0.0f, 0.0f});
  block({kNaN});
  block({kNaN, 0.0f, -0.0f, 0.5f, kNaN, -0.25f});
  block({kInf, 1.0f, -1.0f, 0.0f, kNaN});
  block({-kInf, 3.0f, kInf});
  block({std::numeric_limits<float>::denorm_min(), -2e-45f, 1e-40f, -3e-39f, 0.0f, 5e-42f});
  block({1e30f, -1e30f, 1.0f, 3e38f, -3.4e38f});
  block({std::numeric_limits<float>::max(), -1e-30f, 1e20f});
  block({-1.0f, -0.5f, -0.99296874f, -0.7f});
  for (float scale : {1.0f, 4.0f, 3.0f, 0x1p100f}) {
    for (int start = 0; start < 255; start += 63) {
      std::vector<float> b = {scale};
      for (int j = start; j < std::min(255, start + 63); ++j) b.push_back((code[j] + code[j + 1]) * 0.5f * scale);
      block(b);
    }
  }
  v.push_back(0.75f);  // partial last block
  v.push_back(-0.125f);
  return v;
}

void zero_blocks(Device dev) {
  for (DType t : kDtypes) {
    CAPTURE(dtype_name(t));
    const Tensor A = Tensor::zeros({200}, t, dev);
    const Quantized qb = quantize_blockwise(A, Code(), 64);
    CHECK(qb.codes.to_vector<uint8_t>() == std::vector<uint8_t>(200, 127));
    CHECK(qb.state.absmax.to_vector<float>() == std::vector<float>(4, 0.0f));
    for (const Tensor& y : {dequantize_blockwise(qb.codes, qb.state), fake_quantize_blockwise(A, Code(), 64)})
      for (float x : y.to_vector<float>()) CHECK(bits(x) == 0u);  // +0
    const Quantized qg = quantize(A);
    CHECK(qg.codes.to_vector<uint8_t>() == std::vector<uint8_t>(200, 127));
    for (const Tensor& y : {dequantize(qg.codes, qg.state), fake_quantize(A, Code())})
      for (float x : y.to_vector<float>()) CHECK(bits(x) == 0u);
  }
  // All-NaN block: absmax 0 (NaN ignored), codes 0 (NaN -> index 0), dequantized code[0] * 0 = -0.
  const Quantized qn = quantize_blockwise(Tensor::full({64}, NAN, DType::f32, dev), Code(), 64);
  CHECK(qn.state.absmax.to_vector<float>() == std::vector<float>{0.0f});
  CHECK(qn.codes.to_vector<uint8_t>() == std::vector<uint8_t>(64, 0));
  // Global: NaN propagates to absmax, Inf gives NaN / -Inf on dequantize (docs/quant.md,
  // 'Special values').
  const Quantized gn = quantize(host_tensor({1.0f, kNaN, -2.0f}).to(dev));
  CHECK(std::isnan(gn.state.absmax.to_vector<float>()[0]));
  CHECK(gn.codes.to_vector<uint8_t>() == std::vector<uint8_t>(3, 0));
  const Quantized gi = quantize(host_tensor({1.0f, kInf, -2.0f}).to(dev));
  CHECK(gi.codes.to_vector<uint8_t>() == std::vector<uint8_t>{127, 0, 127});
  const auto yi = dequantize(gi.codes, gi.state).to_vector<float>();
  CHECK(std::isnan(yi[0]));
  CHECK(yi[1] == -kInf);
  // NaN values (code 0 * Inf) have the GPU's bits, 0x7FFFFFFF, on both devices, also fake-quantized.
  const auto fi = fake_quantize(host_tensor({1.0f, kInf, -2.0f}).to(dev), Code()).to_vector<float>();
  for (float y : {yi[0], yi[2], fi[0], fi[2]}) CHECK(bits(y) == 0x7FFFFFFFu);
  CHECK(fi[1] == -kInf);
}

void empty_and_shapes(Device dev) {
  for (DType t : kDtypes) {
    const Tensor A = Tensor::empty({0, 5}, t, dev);
    const Quantized qb = quantize_blockwise(A, Code(), 32);
    CHECK(qb.codes.shape() == Shape{0, 5});
    CHECK(qb.state.absmax.shape() == Shape{0});
    CHECK(dequantize_blockwise(qb.codes, qb.state).shape() == Shape{0, 5});
    const Quantized qg = quantize(A);
    CHECK(qg.state.absmax.to_vector<float>() == std::vector<float>{0.0f});
    CHECK(dequantize(qg.codes, qg.state).numel() == 0);
    CHECK(fake_quantize_blockwise(A, Code(), 32).shape() == Shape{0, 5});
    CHECK(fake_quantize(A, Code()).shape() == Shape{0, 5});
    const Quantized qn = quantize_blockwise(A, Code(), 32, true);
    CHECK(dequantize_blockwise(qn.codes, qn.state).numel() == 0);
  }
  const Tensor one = Tensor::full({1}, -0.3, DType::f32, dev);
  const Quantized q1 = quantize_blockwise(one, Code(), 4096);
  CHECK(q1.codes.to_vector<uint8_t>() == std::vector<uint8_t>{0});  // -1 is below code[0]
  CHECK(q1.state.absmax.to_vector<float>() == std::vector<float>{0.3f});
}

void edge_inputs(Device dev) {
  const auto v = edge_values();
  for (DType t : kDtypes) {
    CAPTURE(dtype_name(t));
    const Tensor A = host_tensor(v, t);
    const Quantized q = quantize_blockwise(A.to(dev), Code(), 64);
    const Quantized ref = quantize_blockwise(A, Code(), 64);  // CPU
    CHECK(test::bitwise_equal(q.codes, ref.codes));
    CHECK(test::bitwise_equal(q.state.absmax, ref.state.absmax));
    if (t == DType::f32) {
      // Normal-range blocks against the definition with bitsandbytes' search.
      const auto c = ref.codes.to_vector<uint8_t>();
      const auto am = ref.state.absmax.to_vector<float>();
      int64_t bad = 0;
      for (size_t i = 0; i < v.size(); ++i) {
        const float m = am[i / 64];
        if (m >= 0x1p-126f && m < 0x1p126f) bad += c[i] != bnb_index(Code().values().data(), v[i] * (1.0f / m));
      }
      CHECK(bad == 0);
    }
    CHECK(test::bitwise_equal(fake_quantize_blockwise(A.to(dev), Code(), 64), dequantize_blockwise(q.codes, q.state)));
    const Quantized g = quantize(A.to(dev));
    CHECK(test::bitwise_equal(g.codes, quantize(A).codes));
  }
}

// A block scaled by a power of two quantizes to the same codes, also when its absmax is
// subnormal or >= 2^126 (the scaled reciprocal of kernels/quant_index.cuh keeps r normal).
void extreme_absmax(Device dev) {
  manual_seed(4);
  const auto u = rand({64}).to_vector<float>();
  std::vector<float> base = {1.0f, 0.0f, -0.0f, -1.0f};
  for (size_t i = 4; i < 64; ++i) base.push_back(std::round(u[i] * 512.0f - 256.0f) / 256.0f);  // 9 bits: exact below
  std::vector<float> all;
  for (float scale : {1.0f, 0x1p-140f, 0x1p-126f, 0x1p127f, 0x1p-60f}) {
    for (float b : base) all.push_back(b * scale);
  }
  const Quantized q = quantize_blockwise(host_tensor(all).to(dev), Code(), 64);
  const auto c = q.codes.to_vector<uint8_t>();
  for (size_t k = 1; k < 5; ++k)
    CHECK(std::vector<uint8_t>(c.begin() + 64 * k, c.begin() + 64 * (k + 1)) ==
          std::vector<uint8_t>(c.begin(), c.begin() + 64));
  CHECK(c[0] == 255);
  CHECK(c[1] == 127);
  CHECK(c[2] == 127);
  CHECK(test::bitwise_equal(q.codes, quantize_blockwise(host_tensor(all), Code(), 64).codes));
}

}  // namespace

OCTET_TEST_BOTH("zero blocks, NaN and Inf", zero_blocks)
OCTET_TEST_BOTH("absmax subnormal or >= 2^126", extreme_absmax)
OCTET_TEST_BOTH("empty tensors and single elements", empty_and_shapes)
OCTET_TEST_BOTH("edge inputs: zeros, NaN, Inf, subnormals, 1e30, midpoints", edge_inputs)

// The kernels' fast path takes whole aligned 4096-element tiles (there 16-bit rows take max |x|
// from their raw bits and the warps reduce by an integer max), which the cases above, shorter than a
// tile, never reach. So: the edge values inside full tiles, an all-NaN tile, rows of 8 NaNs among
// finite values, a block with Inf, 16-bit subnormals; codes, absmax and fake-quantized values of
// CUDA equal the CPU's for every dtype and blocksize.
OCTET_CUDA_TEST("edge inputs in full tiles: CUDA equals the CPU") {
  std::vector<float> all = edge_values();  // tile 0: the edge values, then varied magnitudes
  uint32_t state = 12345;
  auto next = [&] {  // deterministic values in (-1, 1)
    state = state * 1664525u + 1013904223u;
    return static_cast<float>(static_cast<int32_t>(state)) * 0x1p-31f;
  };
  while (all.size() < 4096) all.push_back(next() * std::ldexp(1.0f, static_cast<int>(all.size() % 41) - 20));
  all.resize(8192, kNaN);  // tile 1: NaN only
  for (int i = 0; i < 4096; ++i) {  // tile 2: rows of 8 NaNs, an Inf, subnormals of f16/bf16/f32
    float x = next();
    if ((i / 8) % 5 == 0) x = kNaN;
    if (i == 1500) x = kInf;
    if (i >= 2048 && i < 3072) x *= (i & 1) ? 0x1p-20f : 0x1p-130f;
    all.push_back(x);
  }
  for (int i = 0; i < 100; ++i) all.push_back(all[static_cast<size_t>(i) * 7]);  // a partial tile
  for (DType t : kDtypes) {
    CAPTURE(dtype_name(t));
    const Tensor A = host_tensor(all, t);
    for (int64_t bs : {64, 256, 1024, 4096}) {
      CAPTURE(bs);
      const Quantized q = quantize_blockwise(A.to(Device::cuda(0)), Code(), bs);
      const Quantized ref = quantize_blockwise(A, Code(), bs);
      CHECK(test::bitwise_equal(q.codes, ref.codes));
      CHECK(test::bitwise_equal(q.state.absmax, ref.state.absmax));
      CHECK(test::bitwise_equal(fake_quantize_blockwise(A.to(Device::cuda(0)), Code(), bs),
                                fake_quantize_blockwise(A, Code(), bs)));
    }
  }
}

// ================================ bad arguments ================================

TEST_CASE("bad arguments: blocksize, dtype, undefined, requires_grad") {
  const Tensor A = Tensor::ones({100});
  for (int64_t bs : {0, -64, 16, 48, 96, 8192}) {
    CAPTURE(bs);
    CHECK_THROWS_WITH_AS(quantize_blockwise(A, Code(), bs),
                         doctest::Contains("argument 'blocksize': expected a power of two in [32, 4096]"), Error);
    CHECK_THROWS_WITH_AS(fake_quantize_blockwise(A, Code(), bs), doctest::Contains("argument 'blocksize'"), Error);
  }
  for (DType t : {DType::f64, DType::u8, DType::i32, DType::f8_e4m3}) {
    const Tensor B = Tensor::zeros({8}, t);
    CHECK_THROWS_WITH_AS(quantize_blockwise(B),
                         doctest::Contains("quantize_blockwise: argument 'A': expected dtype f32, f16 or bf16"), Error);
    CHECK_THROWS_WITH_AS(quantize(B), doctest::Contains("quantize: argument 'A': expected dtype f32, f16 or bf16"),
                         Error);
    CHECK_THROWS_WITH_AS(fake_quantize(B, Code()), doctest::Contains("argument 'A'"), Error);
    CHECK_THROWS_WITH_AS(fake_quantize_blockwise(B, Code(), 64), doctest::Contains("argument 'A'"), Error);
  }
  CHECK_THROWS_WITH_AS(quantize(Tensor()), doctest::Contains("defined"), Error);
  Tensor g = Tensor::ones({8});
  g.requires_grad_();
  CHECK_THROWS_WITH_AS(quantize_blockwise(g), doctest::Contains("has no gradient"), Error);
  CHECK_THROWS_WITH_AS(fake_quantize(g, Code()), doctest::Contains("has no gradient"), Error);
  CHECK_NOTHROW(fake_quantize(g.detach(), Code()));
}

TEST_CASE("bad arguments: codes and state that do not match") {
  const Tensor A = randn({10, 30});
  const Quantized q = quantize_blockwise(A, Code(), 64);
  CHECK_THROWS_WITH_AS(dequantize_blockwise(q.codes.to(DType::f32), q.state),
                       doctest::Contains("argument 'codes': expected dtype u8"), Error);
  CHECK_THROWS_WITH_AS(dequantize_blockwise(q.codes.reshape({30, 10}), q.state),
                       doctest::Contains("argument 'codes': expected shape (10, 30) (state.shape)"), Error);
  QuantState st = q.state;
  st.blocksize = 48;
  CHECK_THROWS_WITH_AS(dequantize_blockwise(q.codes, st), doctest::Contains("argument 'state.blocksize'"), Error);
  st.blocksize = 128;  // absmax has ceil(300 / 64) = 5 entries, 128 needs 3
  CHECK_THROWS_WITH_AS(dequantize_blockwise(q.codes, st),
                       doctest::Contains("argument 'state.absmax': expected shape (3,)"), Error);
  st = q.state;
  st.absmax = Tensor::zeros({5}, DType::f16);
  CHECK_THROWS_WITH_AS(dequantize_blockwise(q.codes, st),
                       doctest::Contains("argument 'state.absmax': expected dtype f32"), Error);
  st = q.state;
  st.code = Tensor::zeros({255});
  CHECK_THROWS_WITH_AS(dequantize_blockwise(q.codes, st), doctest::Contains("argument 'state.code'"), Error);
  st.code = Tensor::zeros({256}, DType::f16);
  CHECK_THROWS_WITH_AS(dequantize_blockwise(q.codes, st),
                       doctest::Contains("argument 'state.code': expected dtype f32"), Error);
  st.code = Tensor();
  CHECK_THROWS_WITH_AS(dequantize_blockwise(q.codes, st), doctest::Contains("argument 'state.code'"), Error);
  st = q.state;
  st.dtype = DType::f64;
  CHECK_THROWS_WITH_AS(dequantize_blockwise(q.codes, st), doctest::Contains("argument 'state.dtype'"), Error);
  CHECK_THROWS_WITH_AS(dequantize_blockwise(q.codes, q.state, DType::u8), doctest::Contains("argument 'out_dtype'"),
                       Error);
  // Global and blockwise states are not interchangeable.
  const Quantized g = quantize(A);
  CHECK_THROWS_WITH_AS(dequantize_blockwise(g.codes, g.state), doctest::Contains("expected a blockwise state"), Error);
  CHECK_THROWS_WITH_AS(dequantize(q.codes, q.state),
                       doctest::Contains("expected a global state (blocksize 0), got a blockwise state (blocksize 64)"),
                       Error);
  QuantState gs = g.state;
  gs.absmax = Tensor::zeros({2});
  CHECK_THROWS_WITH_AS(dequantize(g.codes, gs), doctest::Contains("argument 'state.absmax': expected 1 element"),
                       Error);
  // Nested states need their parts.
  const Quantized n = quantize_blockwise(A, Code(), 64, true);
  QuantState ns = n.state;
  ns.state2.reset();
  CHECK_THROWS_WITH_AS(dequantize_blockwise(n.codes, ns), doctest::Contains("argument 'state.state2'"), Error);
  ns = n.state;
  ns.offset = Tensor::zeros({3});
  CHECK_THROWS_WITH_AS(dequantize_blockwise(n.codes, ns), doctest::Contains("argument 'state.offset'"), Error);
  ns = n.state;
  ns.nested = false;  // u8 absmax read as f32
  CHECK_THROWS_WITH_AS(dequantize_blockwise(n.codes, ns),
                       doctest::Contains("argument 'state.absmax': expected dtype f32"), Error);
}

OCTET_CUDA_TEST("bad arguments: codes and state on different devices") {
  const Device cuda = Device::cuda(0);
  const Quantized q = quantize_blockwise(randn({300}).to(cuda), Code(), 64);
  QuantState st = q.state;
  CHECK_THROWS_WITH_AS(dequantize_blockwise(q.codes.to(Device::cpu()), st),
                       doctest::Contains("argument 'state.code': expected a tensor on cpu"), Error);
  st.code = Code().table(Device::cpu());
  st.absmax = q.state.absmax.to(Device::cpu());
  CHECK_THROWS_WITH_AS(dequantize_blockwise(q.codes, st),
                       doctest::Contains("argument 'state.code': expected a tensor on cuda:0"), Error);
  st.code = q.state.code;
  CHECK_THROWS_WITH_AS(dequantize_blockwise(q.codes, st),
                       doctest::Contains("argument 'state.absmax': expected a tensor on cuda:0"), Error);
  const Quantized g = quantize(randn({30}).to(cuda));
  QuantState gs = g.state;
  gs.absmax = gs.absmax.to(Device::cpu());
  CHECK_THROWS_WITH_AS(dequantize(g.codes, gs),
                       doctest::Contains("argument 'state.absmax': expected a tensor on cuda:0"), Error);
}

// ================================ nested, fake-quantize ================================

namespace {

void nested_absmax(Device dev) {
  manual_seed(5);
  for (int64_t bs : {64, 4096}) {
    CAPTURE(bs);
    const Tensor A = scale(randn({100007}), 3.0).to(dev);
    const Quantized q = quantize_blockwise(A, Code(), bs, true);
    const Quantized plain = quantize_blockwise(A, Code(), bs);
    const int64_t nb = (100007 + bs - 1) / bs;
    REQUIRE(q.state.nested);
    REQUIRE(q.state.state2);
    CHECK(q.state.absmax.dtype() == DType::u8);
    CHECK(q.state.absmax.shape() == Shape{nb});
    CHECK(q.state.offset.numel() == 1);
    CHECK(q.state.state2->blocksize == bs);
    CHECK(q.state.state2->shape == Shape{nb});
    CHECK(test::bitwise_equal(q.codes, plain.codes));
    const auto am = plain.state.absmax.to_vector<float>();
    double mean = 0;
    for (float v : am) mean += v;
    mean /= static_cast<double>(am.size());
    const float off = q.state.offset.to_vector<float>()[0];
    CHECK(std::fabs(off - mean) <= 1e-6 * mean);
    // Dequantize = code[q] * (dynamic[absmax codes] * absmax2 + offset), float32 steps.
    const auto ac = q.state.absmax.to_vector<uint8_t>();
    const auto am2 = q.state.state2->absmax.to_vector<float>();
    const auto& dyn = Code().values();
    std::vector<float> rebuilt(ac.size());
    for (size_t i = 0; i < ac.size(); ++i) rebuilt[i] = dyn[ac[i]] * am2[i / bs] + off;
    CHECK(test::bitwise_equal(dequantize_blockwise(q.codes, q.state),
                              dequant_reference(q.codes, rebuilt, bs, Code(), DType::f32)));
    // Within half the widest gap of the dynamic table (0.0140625 / 2) times the inner absmax.
    int64_t far = 0;
    for (size_t i = 0; i < am.size(); ++i) far += std::fabs(rebuilt[i] - am[i]) > 0.00704 * am2[i / bs] + 1e-6 * am[i];
    CHECK(far == 0);
  }
}

void fake_equals_round_trip(Device dev) {
  manual_seed(6);
  for (int64_t n : {1, 31, 4097, 100003}) {
    for (DType t : kDtypes) {
      CAPTURE(n);
      CAPTURE(dtype_name(t));
      const Tensor A = randn({n}).to(t).to(dev);
      for (int64_t bs : {32, 256, 4096}) {
        for (const Code& code : {Code(), Code::fp8_e4m3(), Code::fp8_e5m2()}) {
          const Quantized q = quantize_blockwise(A, code, bs);
          const Tensor y = fake_quantize_blockwise(A, code, bs);
          CHECK(y.dtype() == t);
          CHECK(test::bitwise_equal(y, dequantize_blockwise(q.codes, q.state)));
        }
      }
      // Global: bitsandbytes' path, A.to(f32) -> quantize -> dequantize -> to(A's dtype).
      const Tensor A32 = A.to(DType::f32);
      const Quantized g = quantize(A32, Code::fp8_e4m3());
      CHECK(test::bitwise_equal(fake_quantize(A, Code::fp8_e4m3()), dequantize(g.codes, g.state).to(t)));
      const Quantized g2 = quantize(A, Code::fp8_e4m3());
      CHECK(test::bitwise_equal(g2.codes, g.codes));
      CHECK(test::bitwise_equal(dequantize(g2.codes, g2.state), dequantize(g.codes, g.state).to(t)));
    }
  }
}

}  // namespace

OCTET_TEST_BOTH("nested absmax", nested_absmax)
OCTET_TEST_BOTH("fake_quantize(_blockwise) == dequantize(quantize) bit for bit", fake_equals_round_trip)
