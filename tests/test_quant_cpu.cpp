// The CPU quantize/dequantize path (src/cpu/quant_fast.cpp: compact index table, AVX2, threads)
// against a plain scalar reference written here from the rule (kernels/quant_index.cuh:
// block_scale, block_x, global_x, closed_form, mul_nan): codes, absmax and dequantized values
// bit for bit, on random inputs mixed with NaN, Inf, subnormals of every input dtype, -0, values
// on code midpoints and tiny values next to huge ones, in f32/f16/bf16 (dequantized also to f64), at odd sizes and
// every blocksize, for every library table and a crowded user table (no compact table).
#include <cmath>
#include <cstring>
#include <random>

#include "src/cpu/element.hpp"
#include "src/cpu/quant.hpp"
#include "tests/helpers.hpp"

using namespace octet;
namespace qi = quant_index;

namespace {

float from_bits(uint32_t u) { return qi::bits_float(u); }

// Random floats where every trouble-maker is frequent: any bit pattern, normal data, specials,
// subnormals (of f32 and of the 16-bit formats), code midpoints (ties) and huge/tiny mixes.
std::vector<float> nasty_floats(int64_t n, uint32_t seed, const std::vector<float>& code) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  const float specials[] = {0.0f,          -0.0f,        INFINITY,      -INFINITY,    NAN,          -NAN,
                            0x1p-149f,     -0x1p-149f,   0x1p-126f,     0x1.fffffcp-127f, 0x1p-24f, -0x1p-24f,
                            0x1p-133f,     0x1p-14f,     3.4e38f,       -3.4e38f,     1.0f,         -1.0f};
  // The regime of each run of 64 values, so whole blocks can be all tiny, all special, ...
  int regime = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (i % 64 == 0) regime = static_cast<int>(rng() % 6);
    const uint32_t pick = rng() % 8;
    float x;
    switch (pick < 6 ? regime : pick % 6) {
      case 0: x = normal(rng); break;
      case 1: x = from_bits(static_cast<uint32_t>(rng())); break;
      case 2: x = specials[rng() % std::size(specials)]; break;
      case 3: x = std::ldexp(normal(rng), -static_cast<int>(rng() % 150)); break;  // down into the subnormals
      case 4: {  // exact midpoints (ties), in runs whose absmax is 1, so that x = v
        const size_t j = rng() % 255;
        x = i % 32 == 0 ? 1.0f : (code[j] + code[j + 1]) * 0.5f;
        break;
      }
      default: x = std::ldexp(normal(rng), static_cast<int>(rng() % 254) - 127); break;
    }
    v[static_cast<size_t>(i)] = x;
  }
  return v;
}

Tensor host(const std::vector<float>& v, DType t) { return Tensor::from_vector(v).to(t); }

// The elements of A as the CPU path reads them (load_f32 of the stored value).
std::vector<float> loaded(const Tensor& A) { return A.to_vector<float>(); }

struct Reference {
  std::vector<float> absmax;
  std::vector<uint8_t> codes;
};

Reference blockwise_reference(const std::vector<float>& v, const qi::Tables& tab, int64_t B) {
  Reference r;
  const int64_t n = static_cast<int64_t>(v.size());
  r.codes.resize(v.size());
  for (int64_t lo = 0; lo < n; lo += B) {
    const int64_t hi = std::min(n, lo + B);
    float m = 0.0f;
    for (int64_t i = lo; i < hi; ++i)
      if (std::fabs(v[i]) > m) m = std::fabs(v[i]);
    r.absmax.push_back(m);
    const qi::Scale sc = qi::block_scale(m);
    for (int64_t i = lo; i < hi; ++i)
      r.codes[i] = static_cast<uint8_t>(qi::closed_form(tab.code, tab.mid, qi::block_x(v[i], sc)));
  }
  return r;
}

Reference global_reference(const std::vector<float>& v, const qi::Tables& tab) {
  Reference r;
  uint32_t m = 0;
  for (float x : v) {
    uint32_t u = qi::float_bits(x) & 0x7FFFFFFFu;
    m = std::max(m, u > 0x7F800000u ? 0x7FC00000u : u);
  }
  r.absmax.push_back(from_bits(m));
  for (float x : v)
    r.codes.push_back(static_cast<uint8_t>(qi::closed_form(tab.code, tab.mid, qi::global_x(x, r.absmax[0]))));
  return r;
}

int64_t count_bits_differ(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return -1;
  int64_t bad = 0;
  for (size_t i = 0; i < a.size(); ++i) bad += qi::float_bits(a[i]) != qi::float_bits(b[i]);
  return bad;
}

int64_t count_differ(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  if (a.size() != b.size()) return -1;
  int64_t bad = 0;
  for (size_t i = 0; i < a.size(); ++i) bad += a[i] != b[i];
  return bad;
}

std::vector<float> crowded_table() {
  std::vector<float> v(256);
  for (int i = 0; i < 256; ++i) v[i] = 1.0f - static_cast<float>(255 - i) * 0x1p-24f;
  return v;
}

std::vector<std::pair<std::string, Code>> codes_under_test() {
  return {{"dynamic", Code::dynamic()},
          {"dynamic unsigned", Code::dynamic(false)},
          {"fp8_e4m3", Code::fp8_e4m3()},
          {"fp8_e5m2", Code::fp8_e5m2()},
          {"linear", Code::linear()},
          {"crowded user table", Code(Tensor::from_vector(crowded_table()), "crowded")}};
}

constexpr DType kInputs[] = {DType::f32, DType::f16, DType::bf16};  // what quantize accepts
constexpr DType kOutputs[] = {DType::f32, DType::f64, DType::f16, DType::bf16};  // cpu::dequantize writes
constexpr int64_t kSizes[] = {0, 1, 7, 31, 32, 33, 100, 4095, 4096 * 3 + 17, 70001};

}  // namespace

TEST_CASE("CPU quantize_blockwise == scalar reference (random and special inputs, every dtype, blocksize, table)") {
  uint32_t seed = 1;
  for (const auto& [name, code] : codes_under_test()) {
    const qi::Tables tab = cpu::index_tables(code.values().data());
    for (DType t : kInputs) {
      for (int64_t n : kSizes) {
        for (int64_t bs : {32, 64, 256, 1024, 4096}) {
          if (n == 70001 && bs < 1024 && name != "dynamic") continue;  // keeps the case short
          CAPTURE(name);
          CAPTURE(dtype_name(t));
          CAPTURE(n);
          CAPTURE(bs);
          const Tensor A = host(nasty_floats(n, seed++, code.values()), t);
          const Reference want = blockwise_reference(loaded(A), tab, bs);
          const Quantized q = quantize_blockwise(A, code, bs);
          CHECK(count_differ(q.codes.to_vector<uint8_t>(), want.codes) == 0);
          CHECK(count_bits_differ(q.state.absmax.to_vector<float>(), want.absmax) == 0);
        }
      }
    }
  }
}

TEST_CASE("CPU global quantize == scalar reference (random and special inputs, every dtype, table)") {
  uint32_t seed = 1000;
  for (const auto& [name, code] : codes_under_test()) {
    const qi::Tables tab = cpu::index_tables(code.values().data());
    for (DType t : kInputs) {
      for (int64_t n : kSizes) {
        for (bool finite : {false, true}) {  // with NaN/Inf, max |A| is NaN/Inf and every x is NaN or 0
          CAPTURE(name);
          CAPTURE(dtype_name(t));
          CAPTURE(n);
          CAPTURE(finite);
          std::vector<float> v = nasty_floats(n, seed++, code.values());
          if (finite)
            for (float& x : v) x = std::isfinite(x) ? x : 0.5f;
          const Tensor A = host(v, t);
          const Reference want = global_reference(loaded(A), tab);
          const Quantized q = quantize(A, code);
          CHECK(count_differ(q.codes.to_vector<uint8_t>(), want.codes) == 0);
          CHECK(count_bits_differ(q.state.absmax.to_vector<float>(), want.absmax) == 0);
        }
      }
    }
  }
}

TEST_CASE("CPU quantize: the compact-table path equals closed_form() per element (cpu::quantize_blockwise)") {
  // The same entry point with and without the lookup table, on f16 (the 16-bit conversions).
  const Code code;
  const qi::Tables tab = cpu::index_tables(code.values().data());
  const cpu::IndexLut& lut = quant_internal::index_lut(code);
  const int64_t n = 4096 * 5 + 77, bs = 512, nb = (n + bs - 1) / bs;
  for (DType t : {DType::f16, DType::bf16}) {
    const Tensor A = host(nasty_floats(n, 99, code.values()), t);
    std::vector<uint8_t> fast(n), slow(n);
    std::vector<float> am_fast(nb), am_slow(nb);
    Tensor fake_fast = test::poisoned({n}, t, Device::cpu()), fake_slow = test::poisoned({n}, t, Device::cpu());
    cpu::quantize_blockwise(t, A.data(), n, tab, &lut, bs, am_fast.data(), fast.data(), fake_fast.data());
    cpu::quantize_blockwise(t, A.data(), n, tab, nullptr, bs, am_slow.data(), slow.data(), fake_slow.data());
    CHECK(count_differ(fast, slow) == 0);
    CHECK(count_bits_differ(am_fast, am_slow) == 0);
    CHECK(test::bitwise_equal(fake_fast, fake_slow));
  }
}

TEST_CASE("CPU dequantize == code[q] * absmax (+ offset) rounded to the output dtype, element by element") {
  std::mt19937 rng(5);
  const Code code;
  const float* table = code.values().data();
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{33}, int64_t{4096 * 3 + 5}, int64_t{70001}}) {
    for (int log2b : {5, 9, 10, 12, 63}) {  // blocks below and above the per-block value table, global
      for (bool with_offset : {false, true}) {
        const int64_t nb = log2b == 63 ? 1 : (n + (int64_t{1} << log2b) - 1) >> log2b;
        std::vector<uint8_t> q(static_cast<size_t>(n));
        for (auto& c : q) c = static_cast<uint8_t>(rng());
        std::vector<float> absmax(static_cast<size_t>(std::max<int64_t>(nb, 1)));
        const float odd[] = {0.0f, NAN, INFINITY, 0x1p-140f, 3e38f, 1e-3f, 1.0f};
        for (auto& a : absmax) a = rng() % 3 ? std::ldexp(1.0f + (rng() % 1000) / 1000.0f, int(rng() % 40) - 20)
                                             : odd[rng() % std::size(odd)];
        const float offset = 0.03125f;
        for (DType t : kOutputs) {
          CAPTURE(n);
          CAPTURE(log2b);
          CAPTURE(with_offset);
          CAPTURE(dtype_name(t));
          Tensor got = test::poisoned({n}, t, Device::cpu());
          cpu::dequantize(q.data(), n, table, absmax.data(), log2b, with_offset ? &offset : nullptr, t, got.data());
          std::vector<float> want(static_cast<size_t>(n));
          for (int64_t i = 0; i < n; ++i) {
            float y = qi::mul_nan(table[q[i]], absmax[log2b == 63 ? 0 : i >> log2b]);
            if (with_offset) y = qi::add_nan(y, offset);
            want[i] = y;
          }
          // Rounded to t one element at a time by the library's own conversion.
          CHECK(test::bitwise_equal(got, Tensor::from_vector(want).to(t)));
        }
      }
    }
  }
}
