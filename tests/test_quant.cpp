// Tests of the quant family: code tables (golden + the SHA-256 of bitsandbytes' tables), the index rule (closed
// form vs a literal port of bitsandbytes' binary search vs the kernels' LUT), CPU semantics,
// golden outputs of bitsandbytes 0.49.2 with the documented reciprocal deltas identified,
// CPU vs CUDA bit for bit, edge inputs, bad arguments, nested absmax, fake-quantize and a
// > 2^31-element case (OCTET_LARGE=1). The port of test_dynamic_quantization is in test_deprecated.cpp.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <set>

#include "kernels/quant.cuh"
#include "src/amax_hint.hpp"
#include "src/cpu/fp8_gemm.hpp"
#include "src/cpu/quant.hpp"
#include "src/runtime_internal.hpp"
#include "tests/helpers.hpp"

using namespace octet;
namespace qi = octet::quant_index;

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr std::initializer_list<DType> kDtypes = {DType::f32, DType::f16, DType::bf16};
constexpr std::initializer_list<int64_t> kBlocksizes = {32, 64, 128, 256, 512, 1024, 2048, 4096};

uint32_t bits(float x) { return qi::float_bits(x); }
float from_bits(uint32_t u) { return qi::bits_float(u); }

std::string sha_of(const Tensor& table) {
  const auto v = table.to_vector<float>();
  return test::sha256(v.data(), v.size() * sizeof(float));
}

// ---- bitsandbytes' dQuantize (csrc/kernels.cu, non-stochastic), ported literally ----
int bnb_index(const float* code, float x) {
  int pivot = 127, upper_pivot = 255, lower_pivot = 0;
  float lower = -1.0f, upper = 1.0f;
  float val = code[pivot];
  for (int i = 64; i > 0; i >>= 1) {
    if (x > val) {
      lower_pivot = pivot;
      lower = val;
      pivot += i;
    } else {
      upper_pivot = pivot;
      upper = val;
      pivot -= i;
    }
    val = code[pivot];
  }
  if (upper_pivot == 255) upper = code[upper_pivot];
  if (lower_pivot == 0) lower = code[lower_pivot];
  if (x > val) {
    const float midpoint = (upper + val) * 0.5f;
    return x > midpoint ? upper_pivot : pivot;
  }
  const float midpoint = (lower + val) * 0.5f;
  return x < midpoint ? lower_pivot : pivot;
}

struct NamedTable {
  const char* name;
  Code code;
  Tensor table;
  const char* golden;
  const char* sha;  // SHA-256 of bitsandbytes 0.49.2's table; "" where none is checked
};

std::vector<NamedTable> tables() {
  return {
      {"dynamic_signed", Code::dynamic(true), create_dynamic_map(true, 7, 8), "map.dynamic_signed",
       "e732639a65f497b4ad684bb166a4467708255edd5207757de8b8f0c7e1fda89c"},
      {"dynamic_unsigned", Code::dynamic(false), create_dynamic_map(false, 7, 8), "map.dynamic_unsigned",
       "305f002cc11278fb769d13b25b9fd0c7c83c8402c40a878fe086f4039fde6398"},
      {"fp8_e4m3", Code::fp8_e4m3(), create_fp8_map(true, 4, 3, 8), "map.fp8_e4m3",
       "f3c007a4cafc83fe599bffde8d83c3b00a6c648306af949f2d0a051da02832aa"},
      {"fp8_e5m2", Code::fp8_e5m2(), create_fp8_map(true, 5, 2, 8), "map.fp8_e5m2",
       "0da7c4e2990b302a360d0664262e0bce8012809e65954885e9b573c00fd57b04"},
      {"linear_signed", Code::linear(), create_linear_map(true, 8), "map.linear_signed", ""},
  };
}

void add_neighbours(std::vector<float>& xs, float c, int ulps) {
  float lo = c, hi = c;
  xs.push_back(c);
  for (int i = 0; i < ulps; ++i) {
    lo = std::nextafter(lo, -kInf);
    hi = std::nextafter(hi, kInf);
    xs.push_back(lo);
    xs.push_back(hi);
  }
}

// Where the closed form (and the binary search) can change value: every entry and every float32
// midpoint, with their neighbours; plus special values.
std::vector<float> critical_points(const std::vector<float>& code) {
  std::vector<float> xs = {0.0f,
                           -0.0f,
                           kInf,
                           -kInf,
                           kNaN,
                           -kNaN,
                           std::numeric_limits<float>::max(),
                           -std::numeric_limits<float>::max(),
                           std::numeric_limits<float>::denorm_min(),
                           -std::numeric_limits<float>::denorm_min(),
                           1.0f,
                           -1.0f,
                           2.0f,
                           -2.0f};
  for (int j = 0; j < 256; ++j) add_neighbours(xs, code[j], 2);
  for (int j = 0; j < 255; ++j) add_neighbours(xs, (code[j] + code[j + 1]) * 0.5f, 2);
  return xs;
}

std::vector<float> random_floats(size_t count, uint32_t seed) {
  manual_seed(seed);
  const auto u = rand({static_cast<int64_t>(count)}).to_vector<float>();
  const auto g = randn({static_cast<int64_t>(count)}).to_vector<float>();
  std::vector<float> xs;
  for (size_t i = 0; i < count; ++i) {
    xs.push_back(from_bits(static_cast<uint32_t>(u[i] * 4294967296.0)));  // any bit pattern
    xs.push_back(g[i]);
    xs.push_back(u[i] * 2.0f - 1.0f);
  }
  return xs;
}

Tensor host_tensor(const std::vector<float>& v, DType t = DType::f32) { return Tensor::from_vector(v).to(t); }

using test::view;

}  // namespace

// ================================ tables ================================

TEST_CASE("golden file tests/data/bnb-0.49.2.safetensors: present, SHA-256 as documented, 77 tensors") {
  // The SHA-256 itself, on FIPS 180-4's examples (one block, empty, two blocks after padding).
  CHECK(test::sha256("abc", 3) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(test::sha256("", 0) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  const char* two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  CHECK(test::sha256(two_blocks, 56) == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  // golden() checks the file's SHA-256 against tests/data/README.md's and says what is wrong.
  REQUIRE_NOTHROW(test::golden());
  CHECK(test::golden().size() == 77);
  CHECK(load_safetensors_metadata(test::golden_file()).at("source") == "bitsandbytes 0.49.2");
}

TEST_CASE("code tables equal bitsandbytes 0.49.2 bit for bit (SHA-256 of its tables)") {
  for (const auto& t : tables()) {
    CAPTURE(std::string(t.name));
    CHECK(t.table.dtype() == DType::f32);
    CHECK(t.table.shape() == Shape{256});
    if (*t.sha) CHECK(sha_of(t.table) == t.sha);
    CHECK(test::bitwise_equal(t.table, test::golden(t.golden)));
    CHECK(t.code.values() == t.table.to_vector<float>());
  }
  // Values of bitsandbytes 0.49.2's dynamic table (docs/quant.md, 'Code tables').
  const auto d = create_dynamic_map().to_vector<float>();
  CHECK(bits(d[0]) == 0xbf7e3333u);
  CHECK(d[255] == 1.0f);
  CHECK(d[127] == 0.0f);
  CHECK(d[128] == 5.5000004e-07f);
  CHECK(d[126] == -5.5000004e-07f);
  CHECK(d[129] == 3.2500002e-06f);
  CHECK(std::count_if(d.begin(), d.end(), [](float v) { return v >= 0.1f; }) == 65);
  CHECK(std::set<float>(d.begin(), d.end()).size() == 256);
  const auto e4 = create_fp8_map(true, 4, 3, 8).to_vector<float>();
  CHECK(e4[0] == -1.0f);
  CHECK(e4[1] == -0.93333334f);
  CHECK(bits(e4[127]) == 0x00000000u);
  CHECK(bits(e4[128]) == 0x80000000u);
  CHECK(e4[129] == 1.0172527e-06f);
  CHECK(e4[136] == 3.2552085e-05f);
  const auto e5 = create_fp8_map(true, 5, 2, 8).to_vector<float>();
  CHECK(e5[1] == -0.85714287f);
  CHECK(e5[129] == 3.3261522e-11f);
  CHECK(e5[132] == 5.3218435e-10f);
  const auto lin = create_linear_map().to_vector<float>();
  CHECK(lin[0] == -1.0f);
  CHECK(lin[127] == 0.0f);
  CHECK(lin[128] == 3.7252903e-09f);
  CHECK(lin[255] == 1.0f);
  // The non-fused linspace would give another table (docs/quant.md, 'Code tables'): the fused form matters.
  CHECK(sha_of(create_dynamic_map()) != "dad4c269c3243d1705f6b979dccb61efb8d1074812ecf8d79255a82f60671763");
}

TEST_CASE("code table generators: other arguments and bad arguments") {
  // Fewer bits: zeros padded and sorted in, still 256 entries.
  const auto d4 = create_dynamic_map(true, 2, 4).to_vector<float>();
  CHECK(std::count(d4.begin(), d4.end(), 0.0f) == 241);
  CHECK(std::is_sorted(d4.begin(), d4.end()));
  const auto f6 = create_fp8_map(true, 3, 2, 6).to_vector<float>();
  CHECK(std::is_sorted(f6.begin(), f6.end()));
  CHECK(*std::max_element(f6.begin(), f6.end()) == 1.0f);
  CHECK_THROWS_WITH_AS(create_dynamic_map(true, 8, 8), doctest::Contains("max_exponent_bits"), Error);
  CHECK_THROWS_WITH_AS(create_dynamic_map(true, 7, 9), doctest::Contains("total_bits"), Error);
  CHECK_THROWS_WITH_AS(create_dynamic_map(false, 6, 8), doctest::Contains("2^total_bits"), Error);
  CHECK_THROWS_WITH_AS(create_fp8_map(true, 4, 4, 8), doctest::Contains("exponent_bits + precision_bits"), Error);
  CHECK_THROWS_WITH_AS(create_fp8_map(false, 8, 0, 8), doctest::Contains("fit in float32"), Error);
  CHECK_THROWS_WITH_AS(create_linear_map(true, 0), doctest::Contains("total_bits"), Error);
}

TEST_CASE("Code validates a table once: dtype, shape, NaN, order") {
  auto table = create_dynamic_map().to_vector<float>();
  CHECK(Code(Tensor::from_vector(table), "mine").name() == "mine");
  CHECK_THROWS_WITH_AS(Code(Tensor::from_vector(table).to(DType::f16)), doctest::Contains("dtype f32"), Error);
  CHECK_THROWS_WITH_AS(Code(Tensor::from_vector(std::vector<float>(255, 0.0f))), doctest::Contains("(256,)"), Error);
  CHECK_THROWS_WITH_AS(Code(Tensor::from_vector(table, Shape{16, 16})), doctest::Contains("(256,)"), Error);
  CHECK_THROWS_WITH_AS(Code{Tensor()}, doctest::Contains("defined"), Error);
  auto bad = table;
  bad[10] = kNaN;
  CHECK_THROWS_WITH_AS(Code(Tensor::from_vector(bad)), doctest::Contains("NaN at index 10"), Error);
  bad = table;
  std::swap(bad[3], bad[4]);
  CHECK_THROWS_WITH_AS(Code(Tensor::from_vector(bad)), doctest::Contains("sorted ascending"), Error);
  // The unsorted few-bit linear map is refused when wrapped.
  CHECK_THROWS_WITH_AS(Code(create_linear_map(false, 4)), doctest::Contains("sorted ascending"), Error);
  // Duplicates (the two FP8 zeros) and infinities are legal.
  auto dup = table;
  dup[0] = -kInf;
  CHECK_NOTHROW(Code(Tensor::from_vector(dup)));
  CHECK(Code().values() == table);
  CHECK(Code().table(Device::cpu()).same(Code().table(Device::cpu())));  // cached
}

// ================================ index rule ================================

TEST_CASE("closed form == bitsandbytes' binary search on every table (all midpoints, entries, neighbours, random)") {
  for (const auto& t : tables()) {
    CAPTURE(std::string(t.name));
    const qi::Tables tab = cpu::index_tables(t.code.values().data());
    auto xs = critical_points(t.code.values());
    const auto r = random_floats(20000, 7);
    xs.insert(xs.end(), r.begin(), r.end());
    int64_t bad = 0;
    for (float x : xs) bad += qi::closed_form(tab.code, tab.mid, x) != bnb_index(tab.code, x);
    CHECK(bad == 0);
  }
  // Index rule facts (docs/quant.md, 'Index rule'): NaN -> 0, ±0 -> the zero code, beyond the ends -> 0 / 255, ties go to even.
  const qi::Tables d = cpu::index_tables(Code().values().data());
  CHECK(qi::closed_form(d.code, d.mid, kNaN) == 0);
  CHECK(qi::closed_form(d.code, d.mid, 0.0f) == 127);
  CHECK(qi::closed_form(d.code, d.mid, -0.0f) == 127);
  CHECK(qi::closed_form(d.code, d.mid, 5.0f) == 255);
  CHECK(qi::closed_form(d.code, d.mid, -1.0f) == 0);
  CHECK(qi::closed_form(d.code, d.mid, kInf) == 255);
  CHECK(qi::closed_form(d.code, d.mid, -kInf) == 0);
  for (int j = 0; j < 255; ++j) CHECK(qi::closed_form(d.code, d.mid, d.mid[j]) == (j % 2 == 0 ? j : j + 1));
  const qi::Tables e4 = cpu::index_tables(Code::fp8_e4m3().values().data());
  CHECK(qi::closed_form(e4.code, e4.mid, 0.0f) == 127);
  CHECK(qi::closed_form(e4.code, e4.mid, -0.0f) == 127);
}

// The LUT path and the closed form are both step functions of the float. The LUT can change
// only at bucket starts and thresholds, the closed form only next to entries and midpoints:
// agreeing on both sides of every such point means agreeing on all 2^32 floats.
TEST_CASE("kernel index LUT == closed form on all floats (every change point of both)") {
  for (const auto& t : tables()) {
    CAPTURE(std::string(t.name));
    const qi::Tables tab = cpu::index_tables(t.code.values().data());
    const cpu::IndexLut& lut = quant_internal::index_lut(t.code);
    const qi::LutShape& s = lut.shape;
    MESSAGE(std::string(t.name) << ": LUT of " << lut.entries.size() << " entries, mantissa bits " << 23 - s.shift[0]
                   << " (x >= 0) and " << 23 - s.shift[1] << " (x < 0), " << lut.slow_buckets << " slow buckets");
    CHECK(lut.slow_buckets == 0);
    CHECK(lut.entries.size() <= static_cast<size_t>(qi::kMaxLutEntries));
    auto xs = critical_points(t.code.values());
    for (uint32_t sign = 0; sign < 2; ++sign) {
      CHECK(s.first[sign] + s.buckets[sign] <= static_cast<int>(lut.entries.size()));
      for (int b = 0; b < s.buckets[sign]; ++b) {
        const uint32_t lo = static_cast<uint32_t>(b + s.bias[sign]) << s.shift[sign];
        for (uint32_t u : {lo, lo - 1, lo + 1}) xs.push_back(from_bits((u & 0x7FFFFFFFu) | sign << 31));
        const uint32_t thr = lut.entries[s.first[sign] + b].thr;
        if (thr < 0x80000000u)
          for (uint32_t u : {thr, thr - 1}) xs.push_back(from_bits(u | sign << 31));
      }
    }
    const auto r = random_floats(20000, 11);
    xs.insert(xs.end(), r.begin(), r.end());
    int64_t bad = 0;
    for (float x : xs) bad += qi::lut_index(lut.entries.data(), s, tab, x) != qi::closed_form(tab.code, tab.mid, x);
    CHECK(bad == 0);
    // The kernels' compact table (built on the host, evaluated by the same function as on the
    // device): it changes only at slot starts and at its entries' steps. Every slot's start, end
    // and step, and their neighbours, in both of its domains.
    const qi::Compact& c = lut.compact;
    MESSAGE(std::string(t.name) << ": compact table of " << c.entries << " slots, shift " << c.sh << ", scale 2^-" << c.k
                               << std::string(c.noclamp ? ", no clamp" : ""));
    REQUIRE(c.entries > 0);
    REQUIRE(lut.compact_entries.size() >= static_cast<size_t>(c.entries));
    CHECK(c.hi >= qi::kMaxKernelX);
    CHECK(c.hi >= t.code.values()[0]);
    std::vector<float> cx;
    const uint32_t mask = (1u << c.sh) - 1;
    for (int32_t i = 0; i < c.entries; ++i) {
      const int32_t s0 = static_cast<int32_t>(static_cast<uint32_t>(c.kmin + i) << c.sh);
      const uint32_t e = lut.compact_entries[static_cast<size_t>(i)] - (static_cast<uint32_t>(c.kmin + i) << (c.sh + 8));
      const int32_t step = s0 + static_cast<int32_t>(((e - 1) >> 8) & mask);  // last point below a step
      for (int32_t o : {s0, s0 + static_cast<int32_t>(mask), step})
        for (int d = -1; d <= 1; ++d) cx.push_back(std::ldexp(qi::from_ordered(o + d), c.k));  // x' -> x
    }
    for (float w : {qi::kMaxKernelX, -qi::kMaxKernelX, c.hi, c.floor, std::nextafter(c.floor, -2.0f), 0.0f, -0.0f})
      cx.push_back(w);
    CHECK(c.scale == std::ldexp(1.0f, -c.k));
    for (int e = -2; e <= 2; ++e)  // around 2^(k - 126), where x' leaves the subnormal band, and the smallest floats
      for (float w : {std::ldexp(1.0f, c.k - 126 + e), 0x1p-149f, 0x1p-126f})
        add_neighbours(cx, w, 2), add_neighbours(cx, -w, 2);
    for (uint32_t u : {0x7FC00000u, 0xFFC00000u, 0x7F800001u, 0xFFFFFFFFu, 0xFF800000u}) cx.push_back(from_bits(u));
    cx.insert(cx.end(), xs.begin(), xs.end());
    int64_t bad_clamp = 0, bad_free = 0, n_clamp = 0, n_free = 0;
    for (float x : cx) {
      const uint32_t want = static_cast<uint32_t>(qi::closed_form(tab.code, tab.mid, x));
      if (!(x > c.hi)) {
        ++n_clamp;
        bad_clamp += (qi::compact_index(lut.compact_entries.data(), c, x) & 0xFFu) != want;
      }
      if (c.noclamp && std::fabs(x) <= qi::kMaxKernelX) {
        ++n_free;
        bad_free += (qi::compact_index(lut.compact_entries.data(), c, x, false) & 0xFFu) != want;
      }
    }
    MESSAGE(std::string(t.name) << ": " << n_clamp << " points with the clamp, " << n_free << " without");
    CHECK(bad_clamp == 0);
    CHECK(bad_free == 0);
    // The 16-bit fast paths need the unclamped table for the library's signed codes.
    if (t.code.values()[0] < 0.0f) CHECK(c.noclamp == 1);
  }
}

namespace {

// 256 adjacent floats up to 1.0, inside the kernels' range of x: index steps one ulp apart, closer
// than any slot of a compact table can hold.
std::vector<float> crowded_table() {
  std::vector<float> v(256);
  for (int i = 0; i < 256; ++i) v[i] = 1.0f - static_cast<float>(255 - i) * 0x1p-24f;
  return v;
}

}  // namespace

TEST_CASE("index LUT of a crowded user table falls back to the closed form") {
  const std::vector<float> v = crowded_table();
  const Code c(Tensor::from_vector(v));
  const qi::Tables tab = cpu::index_tables(v.data());
  const cpu::IndexLut& lut = quant_internal::index_lut(c);
  CHECK(lut.slow_buckets > 0);
  CHECK(lut.compact.entries == 0);  // the kernels use lut_index() on it
  int64_t bad = 0;
  for (float x : critical_points(v))
    bad += qi::lut_index(lut.entries.data(), lut.shape, tab, x) != bnb_index(tab.code, x);
  CHECK(bad == 0);
}

OCTET_CUDA_TEST("kernel index LUT == closed form on all 2^32 float bit patterns") {
  for (const auto& t : tables()) {
    CAPTURE(std::string(t.name));
    CHECK(quant_internal::index_mismatches_on(t.code, Device::cuda(0)) == 0);
  }
}

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

// ================================ CPU vs CUDA ================================

OCTET_CUDA_TEST("CPU and CUDA: identical codes, absmax, dequantized and fake-quantized values") {
  const Device cuda = Device::cuda(0);
  manual_seed(21);
  for (int64_t n : {0, 1, 31, 4095, 4097, 1000003}) {
    const Tensor base = scale(randn({n}), 2.5);
    for (DType t : kDtypes) {
      CAPTURE(n);
      CAPTURE(dtype_name(t));
      const Tensor A = base.to(t), Ad = A.to(cuda);
      for (int64_t bs : kBlocksizes) {
        CAPTURE(bs);
        const Quantized c = quantize_blockwise(A, Code(), bs), d = quantize_blockwise(Ad, Code(), bs);
        CHECK(test::bitwise_equal(c.codes, d.codes));
        CHECK(test::bitwise_equal(c.state.absmax, d.state.absmax));
        CHECK(test::bitwise_equal(dequantize_blockwise(c.codes, c.state), dequantize_blockwise(d.codes, d.state)));
        CHECK(test::bitwise_equal(fake_quantize_blockwise(A, Code::fp8_e5m2(), bs),
                                  fake_quantize_blockwise(Ad, Code::fp8_e5m2(), bs)));
        const Quantized cn = quantize_blockwise(A, Code(), bs, true), dn = quantize_blockwise(Ad, Code(), bs, true);
        CHECK(test::bitwise_equal(cn.state.offset, dn.state.offset));
        CHECK(test::bitwise_equal(cn.state.absmax, dn.state.absmax));
        CHECK(test::bitwise_equal(dequantize_blockwise(cn.codes, cn.state), dequantize_blockwise(dn.codes, dn.state)));
      }
      const Quantized c = quantize(A), d = quantize(Ad);
      CHECK(test::bitwise_equal(c.codes, d.codes));
      CHECK(test::bitwise_equal(c.state.absmax, d.state.absmax));
      CHECK(test::bitwise_equal(dequantize(c.codes, c.state), dequantize(d.codes, d.state)));
      CHECK(test::bitwise_equal(fake_quantize(A, Code::fp8_e4m3()), fake_quantize(Ad, Code::fp8_e4m3())));
    }
  }
}

// Every table (compact tables of every size, the unsigned one above 48 KiB of shared memory
// with fake outputs) and a crowded user table (no compact table: the kernels' LUT fallback).
OCTET_CUDA_TEST("CPU and CUDA: fake-quantize and quantize with every table and the LUT fallback") {
  const Device cuda = Device::cuda(0);
  manual_seed(23);
  const std::vector<float> crowded = crowded_table();
  CHECK(quant_internal::index_lut(Code(Tensor::from_vector(crowded))).compact.entries == 0);
  std::vector<std::pair<std::string, Code>> codes;
  for (const auto& tb : tables()) codes.emplace_back(tb.name, tb.code);
  codes.emplace_back("crowded", Code(Tensor::from_vector(crowded)));
  const Tensor base = scale(randn({100003}), 3.0);
  for (const auto& [name, code] : codes) {
    for (DType t : kDtypes) {
      CAPTURE(name);
      CAPTURE(dtype_name(t));
      const Tensor x = name == "crowded" ? add(scale(base, 0x1p-22), Tensor::ones({100003})) : base;
      const Tensor A = x.to(t), Ad = A.to(cuda);
      for (int64_t bs : {64, 4096}) {
        CAPTURE(bs);
        CHECK(test::bitwise_equal(fake_quantize_blockwise(A, code, bs), fake_quantize_blockwise(Ad, code, bs)));
        CHECK(test::bitwise_equal(quantize_blockwise(A, code, bs).codes, quantize_blockwise(Ad, code, bs).codes));
      }
      CHECK(test::bitwise_equal(fake_quantize(A, code), fake_quantize(Ad, code)));
      CHECK(test::bitwise_equal(quantize(A, code).codes, quantize(Ad, code).codes));
    }
  }
}

// Global quantize of a tensor that an elementwise op wrote takes max |A| from its amax hint
// (src/amax_hint.hpp) instead of an absmax pass: codes, absmax and fake values must equal the
// CPU's, with NaN and Inf in the data too (a NaN value has the GPU's bits on both devices:
// quant_index.cuh mul_nan), and a stale hint must not be used.
OCTET_CUDA_TEST("quantize and fake_quantize with an amax hint equal the CPU") {
  const Device cuda = Device::cuda(0);
  manual_seed(29);
  const int64_t n = detail::kAmaxHintMinNumel + 4099;  // partial tail tile
  int parts = 0;
  for (DType t : kDtypes) {
    CAPTURE(dtype_name(t));
    std::vector<float> special(static_cast<size_t>(n), 1.0f);
    for (int with_nan = 0; with_nan < 3; ++with_nan) {
      CAPTURE(with_nan);
      if (with_nan == 1) special[5] = INFINITY;  // absmax Inf: every code from x = v / Inf
      if (with_nan == 2) special[n - 2] = NAN;   // absmax NaN
      const Tensor A = mul(scale(randn({n}, DType::f32, cuda), 0.75), Tensor::from_vector(special, cuda)).to(t);
      const Tensor Ad = mul(A, Tensor::ones({n}, t, cuda));  // an elementwise output: hinted
      REQUIRE(detail::amax_hint(Ad, &parts) != nullptr);
      const Tensor Ah = Ad.to(Device::cpu());
      const Quantized c = quantize(Ah), d = quantize(Ad);
      CHECK(test::bitwise_equal(c.codes, d.codes));
      CHECK(test::bitwise_equal(c.state.absmax, d.state.absmax));
      CHECK(test::bitwise_equal(fake_quantize(Ah, Code::fp8_e4m3()), fake_quantize(Ad, Code::fp8_e4m3())));
      CHECK(test::bitwise_equal(dequantize(c.codes, c.state), dequantize(d.codes, d.state)));
      // Inf in a block: code * Inf is Inf or NaN, NaN with the same bits on both devices
      CHECK(test::bitwise_equal(fake_quantize_blockwise(Ah, Code::fp8_e4m3(), 64),
                                fake_quantize_blockwise(Ad, Code::fp8_e4m3(), 64)));
    }
  }
  // A stale hint: the in-place write raises max |A|, which the hint does not know.
  Tensor A = mul(randn({n}, DType::f16, cuda), Tensor::ones({n}, DType::f16, cuda));
  REQUIRE(detail::amax_hint(A, &parts) != nullptr);
  std::vector<float> big(static_cast<size_t>(n), 0.25f);
  big[3] = 1000.0f;
  A.copy_(Tensor::from_vector(big, cuda).to(DType::f16));
  CHECK(detail::amax_hint(A, &parts) == nullptr);
  const Quantized d = quantize(A);
  CHECK(d.state.absmax.to(Device::cpu()).item() == 1000.0);
  CHECK(test::bitwise_equal(d.codes, quantize(A.to(Device::cpu())).codes));
}

// f16/bf16 global quantize of kernels::kTable16MinNumel elements or more goes through a table of
// all 65536 bit patterns (table16_kernel, kernels/quant_table16.cu): every pattern, with finite
// values only, with an Inf (absmax Inf) and with a NaN (absmax NaN), must give the CPU's codes,
// absmax and fake values; the outputs are poisoned first; an unaligned view takes the
// element-by-element path.
OCTET_CUDA_TEST("global quantize of 16-bit tensors through the pattern table equals the CPU on every pattern") {
  const Device cuda = Device::cuda(0);
  cudaStream_t s = detail::stream(cuda);
  const int64_t n = 8 * 65536 + 5;  // a partial last vector
  REQUIRE(n - 2 >= kernels::kTable16MinNumel);
  for (DType t : {DType::f16, DType::bf16}) {
    const uint16_t exp_mask = t == DType::f16 ? 0x7C00 : 0x7F80;
    for (int special = 0; special < 3; ++special) {
      CAPTURE(dtype_name(t));
      CAPTURE(special);
      Tensor A = Tensor::empty({n}, t);
      auto* bits16 = static_cast<uint16_t*>(A.data());
      for (int64_t i = 0; i < n; ++i) {
        const auto p = static_cast<uint16_t>((i * 40503) & 0xFFFF);  // odd multiplier: every pattern, shuffled
        bits16[i] = (p & exp_mask) == exp_mask ? uint16_t{0} : p;        // finite values only
      }
      if (special == 1) bits16[7] = exp_mask;                                 // +Inf
      if (special == 2) bits16[n - 3] = static_cast<uint16_t>(exp_mask | 1);  // NaN
      const Tensor Ad = A.to(cuda);
      for (const Code& code : {Code(), Code::fp8_e4m3()}) {
        const Quantized c = quantize(A, code), d = quantize(Ad, code);
        CHECK(test::bitwise_equal(c.codes, d.codes));
        CHECK(test::bitwise_equal(c.state.absmax, d.state.absmax));
        CHECK(test::bitwise_equal(fake_quantize(A, code), fake_quantize(Ad, code)));
        const Tensor vc = view(A, 1, n - 2), vd = view(Ad, 1, n - 2);  // unaligned
        CHECK(test::bitwise_equal(quantize(vc, code).codes, quantize(vd, code).codes));
        CHECK(test::bitwise_equal(fake_quantize(vc, code), fake_quantize(vd, code)));
      }
      // Both outputs of one call, into poisoned buffers.
      const kernels::QuantIndex qd = quant_internal::device_index(Code::fp8_e4m3(), cuda);
      Tensor codes_d = test::poisoned({n}, DType::u8, cuda), fake_d = test::poisoned({n}, t, cuda),
             am_d = test::poisoned({1}, DType::f32, cuda);
      kernels::quantize_global(t, Ad.data(), n, qd, am_d.data_ptr<float>(), codes_d.data_ptr<uint8_t>(),
                               fake_d.data(), nullptr, 0, s);
      const Quantized c = quantize(A, Code::fp8_e4m3());
      CHECK(test::bitwise_equal(codes_d, c.codes));
      CHECK(test::bitwise_equal(am_d, c.state.absmax));
      CHECK(test::bitwise_equal(fake_d, fake_quantize(A, Code::fp8_e4m3())));
    }
  }
}

// The FP8 forward's pair (quant_internal::fake_quantize_pair): A's blockwise fake-quantize with max
// |B| as its kernel's side job, then B's global fake-quantize from those partials. Both must equal
// the CPU's, for B smaller and larger than A (blocks with side work only), B unaligned (element by
// element), B with Inf or NaN, and B over the 16-bit table threshold; the partials must reduce to
// the CPU's max |B| bits.
OCTET_CUDA_TEST("fake_quantize_pair: max |B| as the side job of A's kernel equals the CPU") {
  const Device cuda = Device::cuda(0);
  cudaStream_t s = detail::stream(cuda);
  manual_seed(31);
  const Code e4 = Code::fp8_e4m3();
  for (DType t : kDtypes) {
    for (int64_t na : {int64_t{1}, int64_t{4097}, int64_t{100003}}) {
      for (int64_t nb : {int64_t{1}, int64_t{31}, int64_t{3 * 4096}, int64_t{100003}, kernels::kTable16MinNumel + 9}) {
        for (int special = 0; special < 3; ++special) {
          CAPTURE(dtype_name(t));
          CAPTURE(na);
          CAPTURE(nb);
          CAPTURE(special);
          const Tensor A = randn({na}).to(t);
          std::vector<float> bv = randn({nb + 1}).to_vector<float>();
          if (special == 1) bv[nb / 2] = kInf;
          if (special == 2) bv[nb - 1] = kNaN;
          const Tensor Bfull = Tensor::from_vector(bv).to(t);
          const Tensor B = special == 0 ? view(Bfull, 1, nb) : view(Bfull, 0, nb);  // special 0: unaligned
          const Tensor Ad = A.to(cuda), Bd = Bfull.to(cuda);
          const Tensor Bdv = special == 0 ? view(Bd, 1, nb) : view(Bd, 0, nb);
          for (int64_t bs : {64, 4096}) {
            CAPTURE(bs);
            Tensor Aq, Bq;
            quant_internal::fake_quantize_pair(Ad, bs, Bdv, e4, Aq, Bq);
            CHECK(test::bitwise_equal(Aq, fake_quantize_blockwise(A, e4, bs)));
            CHECK(test::bitwise_equal(Bq, fake_quantize(B, e4)));
          }
          // Kernel level: the partials reduce to the CPU's max |B| (amax_bits of the absmax).
          const kernels::QuantIndex qd = quant_internal::device_index(e4, cuda);
          Tensor partial = test::poisoned({kernels::side_absmax_capacity()}, DType::i32, cuda);
          Tensor fake_d = test::poisoned({na}, t, cuda), am_d = test::poisoned({(na + 63) / 64}, DType::f32, cuda);
          kernels::SideAbsmax side{Bdv.data(), nb, static_cast<uint32_t*>(partial.data())};
          kernels::quantize_blockwise(t, Ad.data(), na, qd, 64, am_d.data_ptr<float>(), nullptr, fake_d.data(), s,
                                      &side);
          REQUIRE(side.parts > 0);
          REQUIRE(side.parts <= kernels::side_absmax_capacity());
          const auto parts = view(partial, 0, side.parts).to_vector<int32_t>();
          uint32_t m = 0;
          for (int32_t p : parts) m = std::max(m, static_cast<uint32_t>(p));
          const float cpu_max = quantize(B, e4).state.absmax.to_vector<float>()[0];
          CHECK(m == amax_bits(bits(cpu_max)));
        }
      }
    }
  }
}

OCTET_CUDA_TEST("kernels write every output element (poisoned buffers) and handle unaligned views") {
  const Device cuda = Device::cuda(0);
  cudaStream_t s = detail::stream(cuda);
  const kernels::QuantIndex qd = quant_internal::device_index(Code(), cuda);
  const quant_index::Tables& tab = quant_internal::tables(Code());
  manual_seed(22);
  for (int64_t n : {1, 31, 4097, 100003}) {
    for (DType t : kDtypes) {
      for (int64_t bs : {32, 64, 1024, 4096}) {
        CAPTURE(n);
        CAPTURE(dtype_name(t));
        CAPTURE(bs);
        const Tensor A = randn({n}).to(t), Ad = A.to(cuda);
        const int64_t nb = (n + bs - 1) / bs;
        Tensor codes = test::poisoned({n}, DType::u8, Device::cpu()),
               am = test::poisoned({nb}, DType::f32, Device::cpu());
        Tensor fake = test::poisoned({n}, t, Device::cpu()), y = test::poisoned({n}, t, Device::cpu());
        Tensor codes_d = test::poisoned({n}, DType::u8, cuda), am_d = test::poisoned({nb}, DType::f32, cuda);
        Tensor fake_d = test::poisoned({n}, t, cuda), y_d = test::poisoned({n}, t, cuda);
        cpu::quantize_blockwise(t, A.data(), n, tab, bs, am.data_ptr<float>(), codes.data_ptr<uint8_t>(), fake.data());
        kernels::quantize_blockwise(t, Ad.data(), n, qd, bs, am_d.data_ptr<float>(), codes_d.data_ptr<uint8_t>(),
                                    fake_d.data(), s);
        CHECK(test::bitwise_equal(codes, codes_d));
        CHECK(test::bitwise_equal(am, am_d));
        CHECK(test::bitwise_equal(fake, fake_d));
        int log2b = 0;
        while ((int64_t{1} << log2b) < bs) ++log2b;
        const float* code_d = Code().table(cuda).data_ptr<float>();
        cpu::dequantize(codes.data_ptr<uint8_t>(), n, tab.code, am.data_ptr<float>(), log2b, nullptr, t, y.data());
        kernels::dequantize(codes_d.data_ptr<uint8_t>(), n, code_d, am_d.data_ptr<float>(), log2b, nullptr, t,
                            y_d.data(), s);
        CHECK(test::bitwise_equal(y, y_d));
        CHECK(test::bitwise_equal(y, fake));
        // Global quantize into poisoned buffers; absmax stays on the device.
        Tensor g_d = test::poisoned({n}, DType::u8, cuda), gam_d = test::poisoned({1}, DType::f32, cuda);
        kernels::quantize_global(t, Ad.data(), n, qd, gam_d.data_ptr<float>(), g_d.data_ptr<uint8_t>(), nullptr,
                                 nullptr, 0, s);
        const Quantized gq = quantize(A);
        CHECK(test::bitwise_equal(g_d, gq.codes));
        CHECK(test::bitwise_equal(gam_d, gq.state.absmax));
        // Views that start one element in: the kernels take their unaligned path.
        if (n > 2) {
          const Tensor vc = view(A, 1, n - 2), vd = view(Ad, 1, n - 2);
          const Quantized qc = quantize_blockwise(vc, Code(), bs), qv = quantize_blockwise(vd, Code(), bs);
          CHECK(test::bitwise_equal(qc.codes, qv.codes));
          CHECK(test::bitwise_equal(qc.state.absmax, qv.state.absmax));
          QuantState sc = qc.state, sv = qv.state;  // unaligned codes for dequantize
          sc.shape = sv.shape = {n - 3};
          sc.absmax = view(qc.state.absmax, 0, (n - 3 + bs - 1) / bs);
          sv.absmax = view(qv.state.absmax, 0, (n - 3 + bs - 1) / bs);
          CHECK(test::bitwise_equal(dequantize_blockwise(view(qc.codes, 1, n - 3), sc),
                                    dequantize_blockwise(view(qv.codes, 1, n - 3), sv)));
          CHECK(test::bitwise_equal(quantize(vc).codes, quantize(vd).codes));
          CHECK(test::bitwise_equal(fake_quantize_blockwise(vc, Code(), bs), fake_quantize_blockwise(vd, Code(), bs)));
        }
      }
    }
  }
}

// ================================ more than 2^31 elements ================================

// Needs about 12 GB of GPU memory.
OCTET_LARGE_TEST("quantize_blockwise, quantize and dequantize on 2^31 + 13288 elements (OCTET_LARGE=1)") {
  const Device cuda = Device::cuda(0);
  const int64_t n = (int64_t{1} << 31) + 3 * 4096 + 1000;  // a partial last block
  manual_seed(9);
  const Tensor A = randn({n}, DType::f16, cuda);
  for (int64_t bs : {4096, 64}) {
    CAPTURE(bs);
    const Quantized q = quantize_blockwise(A, Code(), bs);
    const Tensor y = dequantize_blockwise(q.codes, q.state);
    // Whole blocks at the start, across element 2^31, and up to the end.
    for (int64_t off : {int64_t{0}, (int64_t{1} << 31) - 2 * 4096, (int64_t{1} << 31) + 4096}) {
      const int64_t len = std::min<int64_t>(3 * 4096, n - off);
      const Tensor As = view(A, off, len).to(Device::cpu());
      const Quantized c = quantize_blockwise(As, Code(), bs);
      CHECK(test::bitwise_equal(c.codes, view(q.codes, off, len).to(Device::cpu())));
      CHECK(test::bitwise_equal(c.state.absmax, view(q.state.absmax, off / bs, (len + bs - 1) / bs).to(Device::cpu())));
      CHECK(test::bitwise_equal(dequantize_blockwise(c.codes, c.state), view(y, off, len).to(Device::cpu())));
    }
  }
  const Quantized g = quantize(A);
  const float am = g.state.absmax.to_vector<float>()[0];
  CHECK(am > 4.0f);
  const quant_index::Tables& tab = quant_internal::tables(Code());
  for (int64_t off : {int64_t{0}, (int64_t{1} << 31) - 500, n - 700}) {
    const auto v = view(A, off, 700).to_vector<float>();
    const auto c = view(g.codes, off, 700).to_vector<uint8_t>();
    int64_t bad = 0;
    for (size_t i = 0; i < v.size(); ++i) bad += c[i] != quant_index::closed_form(tab.code, tab.mid, v[i] / am);
    CHECK(bad == 0);
  }
}
