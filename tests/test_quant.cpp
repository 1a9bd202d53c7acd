// Tests of the quant family, part one: the code tables (golden, the SHA-256 of bitsandbytes' tables,
// the generators and Code's validation) and the index rule (the closed form vs a literal port of
// bitsandbytes' binary search vs the kernels' LUT and compact table, a crowded user table).
// CPU semantics, golden outputs, edge inputs, bad arguments, nested absmax and fake-quantize are in
// test_quant_behaviour.cpp; CPU vs CUDA and the > 2^31-element case in test_quant_cuda.cpp. The
// port of test_dynamic_quantization is in test_deprecated.cpp.
#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <string>

#include "src/cpu/quant.hpp"
#include "tests/quant_test_helpers.hpp"

using namespace octet;
using namespace octet::quant_test;
namespace qi = octet::quant_index;

namespace {

std::string sha_of(const Tensor& table) {
  const auto v = table.to_vector<float>();
  return test::sha256(v.data(), v.size() * sizeof(float));
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
