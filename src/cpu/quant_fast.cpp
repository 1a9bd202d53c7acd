// CPU quantize / dequantize (blockwise and global) for large tensors: the checkpoint tools'
// path. The codes are closed_form()'s, found through the kernels' compact index table (one
// table load per element instead of an 8-step search), 8 elements at a time with AVX2 where the
// processor has it (checked at run time; the scalar loop otherwise and for tails), on
// parallel_for threads over whole blocks. Every float operation is the one the reference rule
// names (kernels/quant_index.cuh: block_scale, block_x, global_x, mul_nan), in the same order,
// so the codes, absmax and dequantized values are bit-identical to it on every machine and for
// every thread count (tests/test_quant_cpu.cpp compares them with a scalar reference).
// Why the compact table gives closed_form()'s index here: it is built from closed_form() and
// checked on every change point (tests/test_quant.cpp); x * 2^-k is exact wherever it is a
// normal float, and where it is not (|x| < 2^(k - 126)) the table was chosen so that every x > 0
// has one index and every x <= 0 another, which the loops take directly.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define OCTET_CPU_X86 1
#endif

#include "src/cpu/element.hpp"
#include "src/cpu/parallel.hpp"
#include "src/cpu/quant.hpp"

namespace octet::cpu {
namespace qi = quant_index;

namespace {

// The compact table as the loops use it; usable == false: no table (crowded user tables), the
// loops call closed_form().
struct FastIndex {
  bool usable = false;
  const uint32_t* entries = nullptr;
  int32_t shift = 23, kmin = 0, last = 0;  // last: the highest entry
  float floor = 0, hi = 0, scale = 1;
  float band = 0;                    // 2^(k - 126): |x| below it takes tiny_positive / tiny_other
  uint32_t tiny_positive = 0, tiny_other = 0;

  FastIndex(const qi::Tables& tab, const IndexLut* lut) {
    if (!lut || lut->compact.entries == 0) return;
    const qi::Compact& c = lut->compact;
    usable = true;
    entries = lut->compact_entries.data();
    shift = c.sh;
    kmin = c.kmin;
    last = c.entries - 1;
    floor = c.floor;
    hi = c.hi;
    scale = c.scale;
    band = std::ldexp(1.0f, c.k - 126);
    tiny_positive = static_cast<uint32_t>(qi::closed_form(tab.code, tab.mid, 0x1p-149f));
    tiny_other = static_cast<uint32_t>(qi::closed_form(tab.code, tab.mid, -0x1p-149f));
  }

  uint8_t operator()(const qi::Tables& tab, float x) const {
    if (!usable) return static_cast<uint8_t>(qi::closed_form(tab.code, tab.mid, x));
    const float y = std::min(qi::fmax_hd(x, floor), hi);  // NaN -> floor, whose index is 0
    if (std::fabs(y) < band) return static_cast<uint8_t>(y > 0.0f ? tiny_positive : tiny_other);
    const int32_t o = qi::ordered(y * scale);  // exact: a normal float times a power of two
    const int32_t key = std::clamp((o >> shift) - kmin, 0, last);
    return static_cast<uint8_t>(qi::compact_step(entries[key], static_cast<uint32_t>(o) << 8));
  }
};

// How a block's x is formed from v: block_x (s, r) or global_x (absmax).
struct BlockRule {
  qi::Scale scale;
};
struct GlobalRule {
  float absmax;
};
inline float x_of(float v, BlockRule r) { return qi::block_x(v, r.scale); }
inline float x_of(float v, GlobalRule r) { return qi::global_x(v, r.absmax); }

float block_absmax_scalar(const auto* a, int64_t n, float m) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = std::fabs(load_f32(a[i]));
    if (v > m) m = v;  // NaN is ignored (a comparison with NaN is false)
  }
  return m;
}

uint32_t absmax_bits_scalar(const auto* a, int64_t n, uint32_t m) {
  for (int64_t i = 0; i < n; ++i) {
    uint32_t u = qi::float_bits(load_f32(a[i])) & 0x7FFFFFFFu;
    if (u > 0x7F800000u) u = 0x7FC00000u;  // NaN (above Inf) wins
    m = std::max(m, u);
  }
  return m;
}

template <class T, class Rule>
void codes_scalar(const T* a, int64_t n, Rule rule, const qi::Tables& tab, const FastIndex& index, uint8_t* codes) {
  for (int64_t i = 0; i < n; ++i) codes[i] = index(tab, x_of(load_f32(a[i]), rule));
}

#ifdef OCTET_CPU_X86
#define OCTET_AVX2 __attribute__((target("avx2,f16c")))

bool has_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
  return yes;
}

// 8 elements as float, exactly as load_f32 converts them.
OCTET_AVX2 inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
OCTET_AVX2 inline __m256 load8(const double* p) {
  return _mm256_set_m128(_mm256_cvtpd_ps(_mm256_loadu_pd(p + 4)), _mm256_cvtpd_ps(_mm256_loadu_pd(p)));
}
OCTET_AVX2 inline __m256 load8(const BFloat16* p) {
  const __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
}
OCTET_AVX2 inline __m256 load8(const Half* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

OCTET_AVX2 inline __m256 abs8(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

template <class T>
OCTET_AVX2 float block_absmax_avx2(const T* a, int64_t n) {
  __m256 m0 = _mm256_setzero_ps(), m1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {  // max_ps(v, m) keeps m where v is NaN
    m0 = _mm256_max_ps(abs8(load8(a + i)), m0);
    m1 = _mm256_max_ps(abs8(load8(a + i + 8)), m1);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, _mm256_max_ps(m0, m1));
  float m = 0.0f;
  for (float v : lanes) m = std::max(m, v);  // max is exact: the order does not matter
  return block_absmax_scalar(a + i, n - i, m);
}

template <class T>
OCTET_AVX2 uint32_t absmax_bits_avx2(const T* a, int64_t n) {
  const __m256i magnitude = _mm256_set1_epi32(0x7FFFFFFF), inf = _mm256_set1_epi32(0x7F800000),
                nan = _mm256_set1_epi32(0x7FC00000);
  __m256i m = _mm256_setzero_si256();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256i u = _mm256_and_si256(_mm256_castps_si256(load8(a + i)), magnitude);
    u = _mm256_blendv_epi8(u, nan, _mm256_cmpgt_epi32(u, inf));
    m = _mm256_max_epi32(m, u);  // both non-negative as int32: the unsigned order
  }
  alignas(32) uint32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), m);
  uint32_t out = 0;
  for (uint32_t v : lanes) out = std::max(out, v);
  return absmax_bits_scalar(a + i, n - i, out);
}

OCTET_AVX2 inline __m256 x8(__m256 v, BlockRule r) {
  return _mm256_mul_ps(_mm256_mul_ps(v, _mm256_set1_ps(r.scale.s)), _mm256_set1_ps(r.scale.r));
}
OCTET_AVX2 inline __m256 x8(__m256 v, GlobalRule r) {
  return r.absmax == 0.0f ? _mm256_mul_ps(v, _mm256_setzero_ps()) : _mm256_div_ps(v, _mm256_set1_ps(r.absmax));
}

// FastIndex::operator() on 8 lanes (int32 indices in 0..255).
OCTET_AVX2 inline __m256i index8(__m256 x, const FastIndex& f) {
  const __m256 y = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(f.floor)), _mm256_set1_ps(f.hi));  // NaN -> floor
  const __m256 tiny = _mm256_cmp_ps(abs8(y), _mm256_set1_ps(f.band), _CMP_LT_OQ);
  const __m256 positive = _mm256_cmp_ps(y, _mm256_setzero_ps(), _CMP_GT_OQ);
  const __m256i bits = _mm256_castps_si256(_mm256_mul_ps(y, _mm256_set1_ps(f.scale)));
  const __m256i sign_fill = _mm256_and_si256(_mm256_srai_epi32(bits, 31), _mm256_set1_epi32(0x7FFFFFFF));
  const __m256i o = _mm256_xor_si256(bits, sign_fill);  // ordered()
  __m256i key = _mm256_sub_epi32(_mm256_sra_epi32(o, _mm_cvtsi32_si128(f.shift)), _mm256_set1_epi32(f.kmin));
  key = _mm256_min_epi32(_mm256_max_epi32(key, _mm256_setzero_si256()), _mm256_set1_epi32(f.last));
  const __m256i e = _mm256_i32gather_epi32(reinterpret_cast<const int*>(f.entries), key, 4);
  // compact_step: e - 1 + (w >= e) unsigned, i.e. e + (e > w ? -1 : 0).
  const __m256i flip = _mm256_set1_epi32(static_cast<int>(0x80000000u));
  const __m256i w = _mm256_slli_epi32(o, 8);
  const __m256i q = _mm256_add_epi32(e, _mm256_cmpgt_epi32(_mm256_xor_si256(e, flip), _mm256_xor_si256(w, flip)));
  const __m256i tiny_q = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(_mm256_set1_epi32(f.tiny_other)),
                                                              _mm256_castsi256_ps(_mm256_set1_epi32(f.tiny_positive)),
                                                              positive));
  const __m256i out = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(q), _mm256_castsi256_ps(tiny_q), tiny));
  return _mm256_and_si256(out, _mm256_set1_epi32(0xFF));
}

template <class T, class Rule>
OCTET_AVX2 void codes_avx2(const T* a, int64_t n, Rule rule, const qi::Tables& tab, const FastIndex& f,
                           uint8_t* codes) {
  int64_t i = 0;
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (; i + 32 <= n; i += 32) {
    const __m256i q0 = index8(x8(load8(a + i), rule), f), q1 = index8(x8(load8(a + i + 8), rule), f);
    const __m256i q2 = index8(x8(load8(a + i + 16), rule), f), q3 = index8(x8(load8(a + i + 24), rule), f);
    // packs work per 128-bit half: bytes come out as q0[0:4] q1[0:4] q2[0:4] q3[0:4] q0[4:8] ...
    const __m256i bytes = _mm256_packus_epi16(_mm256_packus_epi32(q0, q1), _mm256_packus_epi32(q2, q3));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + i), _mm256_permutevar8x32_epi32(bytes, order));
  }
  codes_scalar(a + i, n - i, rule, tab, f, codes + i);
}
#endif

template <class T>
float block_absmax(const T* a, int64_t n) {
#ifdef OCTET_CPU_X86
  if (has_avx2()) return block_absmax_avx2(a, n);
#endif
  return block_absmax_scalar(a, n, 0.0f);
}

template <class T, class Rule>
void codes_of(const T* a, int64_t n, Rule rule, const qi::Tables& tab, const FastIndex& f, uint8_t* codes) {
#ifdef OCTET_CPU_X86
  if (f.usable && has_avx2()) return codes_avx2(a, n, rule, tab, f, codes);
#endif
  codes_scalar(a, n, rule, tab, f, codes);
}

// The output values of one absmax (and offset) for all 256 codes, rounded to T.
template <class T>
void value_table(const float* code, float absmax, const float* offset, T* out) {
  for (int q = 0; q < 256; ++q) {
    float y = qi::mul_nan(code[q], absmax);
    if (offset) y = qi::add_nan(y, *offset);
    out[q] = store<T>(y);
  }
}

template <class T>
void quantize_blockwise_t(const T* A, int64_t n, const qi::Tables& tab, const FastIndex& f, int64_t B, float* absmax,
                          uint8_t* codes, T* fake) {
  const int64_t nb = (n + B - 1) / B;
  parallel_for(nb, std::max<int64_t>(1, 65536 / B), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t lo = b * B, len = std::min(n, lo + B) - lo;
      const float m = block_absmax(A + lo, len);
      absmax[b] = m;
      codes_of(A + lo, len, BlockRule{qi::block_scale(m)}, tab, f, codes + lo);
      if (fake)
        for (int64_t i = lo; i < lo + len; ++i) fake[i] = store<T>(qi::mul_nan(tab.code[codes[i]], m));
    }
  });
}

}  // namespace

void quantize_blockwise(DType t, const void* A, int64_t n, const qi::Tables& tab, const IndexLut* lut,
                        int64_t blocksize, float* absmax, uint8_t* codes, void* fake_out) {
  const FastIndex f(tab, lut);
  visit_float(t, "quantize_blockwise", [&](auto tag) {
    using T = typename decltype(tag)::type;
    quantize_blockwise_t(static_cast<const T*>(A), n, tab, f, blocksize, absmax, codes, static_cast<T*>(fake_out));
  });
}

float absmax_global(DType t, const void* A, int64_t n) {
  return visit_float(t, "quantize", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* a = static_cast<const T*>(A);
    std::vector<uint32_t> part(static_cast<size_t>(cpu_threads()), 0);
    std::atomic<int> next{0};
    parallel_for(n, 1 << 16, [&](int64_t lo, int64_t hi) {
      uint32_t m = 0;
#ifdef OCTET_CPU_X86
      if (has_avx2()) m = absmax_bits_avx2(a + lo, hi - lo);
      else
#endif
        m = absmax_bits_scalar(a + lo, hi - lo, 0);
      part[static_cast<size_t>(next++)] = m;  // max is order-free: any slot will do
    });
    return qi::bits_float(*std::max_element(part.begin(), part.end()));
  });
}

void quantize_global(DType t, const void* A, int64_t n, const qi::Tables& tab, const IndexLut* lut, float absmax,
                     uint8_t* codes, void* fake_out) {
  const FastIndex f(tab, lut);
  visit_float(t, "quantize", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* a = static_cast<const T*>(A);
    T* fake = static_cast<T*>(fake_out);
    parallel_for(n, 1 << 16, [&](int64_t lo, int64_t hi) {
      codes_of(a + lo, hi - lo, GlobalRule{absmax}, tab, f, codes + lo);
      if (fake)
        for (int64_t i = lo; i < hi; ++i) fake[i] = store<T>(qi::mul_nan(tab.code[codes[i]], absmax));
    });
  });
}

void dequantize(const uint8_t* codes, int64_t n, const float* code, const float* absmax, int log2_blocksize,
                const float* offset, DType out_t, void* out) {
  visit_float(out_t, "dequantize", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* o = static_cast<T*>(out);
    // A run of one absmax: through a table of its 256 values when the run is long enough to pay
    // for building it (the same arithmetic, so the same bits), else element by element.
    auto run = [&](int64_t lo, int64_t hi, float m) {
      if (hi - lo >= 1024) {
        T values[256];
        value_table(code, m, offset, values);
        for (int64_t i = lo; i < hi; ++i) o[i] = values[codes[i]];
        return;
      }
      for (int64_t i = lo; i < hi; ++i) {
        float y = qi::mul_nan(code[codes[i]], m);
        if (offset) y = qi::add_nan(y, *offset);
        o[i] = store<T>(y);
      }
    };
    if (log2_blocksize >= 63) {
      parallel_for(n, 1 << 16, [&](int64_t lo, int64_t hi) { run(lo, hi, absmax[0]); });
      return;
    }
    const int64_t B = int64_t{1} << log2_blocksize, nb = (n + B - 1) / B;
    parallel_for(nb, std::max<int64_t>(1, 65536 / B), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) run(b * B, std::min(n, (b + 1) * B), absmax[b]);
    });
  });
}

}  // namespace octet::cpu
