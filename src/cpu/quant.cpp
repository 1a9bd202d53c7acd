// Host side of the quant family: the code tables of bitsandbytes 0.49.2, the index lookup
// tables of the kernels (built from the closed-form rule) and the nested-absmax helpers.
// Quantize and dequantize themselves are in src/cpu/quant_fast.cpp.
#include "src/cpu/quant.hpp"

#include <algorithm>
#include <cmath>

#include "octet/error.hpp"
#include "src/cpu/element.hpp"
#include "src/cpu/parallel.hpp"

namespace octet::cpu {
namespace qi = quant_index;

namespace {

// torch.linspace(a, b, N) in float32 as torch's CPU kernel computes it (fused multiply-adds).
std::vector<float> lin32(float a, float b, int64_t N) {
  std::vector<float> out(static_cast<size_t>(N));
  if (N == 1) {
    out[0] = a;
    return out;
  }
  const float step = (b - a) / static_cast<float>(N - 1);
  const int64_t h = N / 2;
  for (int64_t k = 0; k < N; ++k)
    out[static_cast<size_t>(k)] =
        k < h ? std::fma(step, static_cast<float>(k), a) : std::fma(-step, static_cast<float>(N - 1 - k), b);
  return out;
}

// (b[k] + b[k + 1]) / 2 in float32.
std::vector<float> means(const std::vector<float>& b) {
  std::vector<float> m(b.size() - 1);
  for (size_t k = 0; k + 1 < b.size(); ++k) m[k] = (b[k] + b[k + 1]) / 2.0f;
  return m;
}

}  // namespace

std::vector<float> dynamic_map(bool is_signed, int max_exponent_bits, int total_bits) {
  const char* op = "create_dynamic_map";
  if (total_bits < 2 || total_bits > 8) fail_arg(op, "total_bits", "2..8", cat(total_bits));
  const int s = total_bits - 1, E = max_exponent_bits;
  if (E < 1 || E > s) fail_arg(op, "max_exponent_bits", cat("1..", s, " (total_bits - 1)"), cat(E));
  std::vector<float> data;
  auto emit = [&](const std::vector<float>& m, float d) {
    for (float v : m) data.push_back(d * v);
    if (is_signed)
      for (float v : m) data.push_back(-d * v);
  };
  for (int i = 0; i < E; ++i) {
    const int64_t cnt = int64_t{1} << (is_signed ? i + s - E : i + s - E + 1);
    emit(means(lin32(0.1f, 1.0f, cnt + 1)), static_cast<float>(std::pow(10.0, i - (E - 1))));
  }
  const int64_t extra = (int64_t{1} << (s - E)) - 1;
  if (extra > 0) emit(means(lin32(0.1f, 1.0f, extra + 1)), 1.0f);  // the last decade's scale, 10^0
  data.push_back(0.0f);
  data.push_back(1.0f);
  if (data.size() != (size_t{1} << total_bits))
    fail(op, cat("arguments (", is_signed, ", ", E, ", ", total_bits, ") give ", data.size(),
                 " values instead of 2^total_bits (bitsandbytes asserts the same)"));
  data.resize(256, 0.0f);
  std::sort(data.begin(), data.end());
  return data;
}

std::vector<float> fp8_map(bool is_signed, int exponent_bits, int precision_bits, int total_bits) {
  const char* op = "create_fp8_map";
  if (total_bits < 1 || total_bits > 8) fail_arg(op, "total_bits", "1..8", cat(total_bits));
  if (exponent_bits < 1) fail_arg(op, "exponent_bits", "at least 1", cat(exponent_bits));
  if (precision_bits < 0) fail_arg(op, "precision_bits", "at least 0", cat(precision_bits));
  if (exponent_bits + precision_bits != total_bits - (is_signed ? 1 : 0))
    fail_arg(op, "exponent_bits + precision_bits",
             cat("total_bits - ", is_signed ? 1 : 0, " = ", total_bits - is_signed),
             cat(exponent_bits + precision_bits));
  const int bias = 1 << (exponent_bits - 1);
  std::vector<double> values;
  for (int F = 0; F < (1 << exponent_bits); ++F) {
    for (int pattern = 0; pattern < (1 << precision_bits); ++pattern) {
      double v = (F != 0 ? 1.0 : 0.0) + std::ldexp(pattern, -precision_bits);
      v = F == 0 ? std::ldexp(v, -bias) : std::ldexp(v, bias + 1 - F);
      values.push_back(v);
      if (is_signed) values.push_back(-v);
    }
  }
  // Python's stable sort: +0.0 stays before -0.0, padding zeros come after both.
  std::stable_sort(values.begin(), values.end(), [](double a, double b) { return a < b; });
  values.resize(256, 0.0);
  std::stable_sort(values.begin(), values.end(), [](double a, double b) { return a < b; });
  std::vector<float> code(256);
  float max = 0.0f;
  for (size_t i = 0; i < 256; ++i) {
    code[i] = static_cast<float>(values[i]);
    if (!std::isfinite(code[i]))
      fail_arg(op, "exponent_bits", "a format whose values fit in float32", cat(exponent_bits, " (", values[i], ")"));
    max = std::max(max, code[i]);
  }
  for (float& c : code) c = c / max;
  return code;
}

std::vector<float> linear_map(bool is_signed, int total_bits) {
  if (total_bits < 1 || total_bits > 8) fail_arg("create_linear_map", "total_bits", "1..8", cat(total_bits));
  const int64_t count = is_signed ? (int64_t{1} << total_bits) - 1 : int64_t{1} << total_bits;
  const std::vector<float> v = lin32(is_signed ? -1.0f : 0.0f, 1.0f, count);
  std::vector<float> code(v.begin(), v.begin() + count / 2);  // zeros go in the middle
  code.resize(static_cast<size_t>(256 - (count - count / 2)), 0.0f);
  code.insert(code.end(), v.begin() + count / 2, v.end());
  return code;
}

qi::Tables index_tables(const float* code) {
  qi::Tables t;
  std::copy(code, code + 256, t.code);
  for (int j = 0; j < 255; ++j) t.mid[j] = (code[j] + code[j + 1]) * 0.5f;
  return t;
}

namespace {

// Appends every u in (lo, hi] where f(u) != f(u - 1); f is monotone on [lo, hi].
template <class F>
void find_steps(const F& f, uint32_t lo, uint32_t hi, int flo, int fhi, std::vector<uint32_t>& out) {
  if (flo == fhi) return;
  if (hi - lo == 1) {
    out.push_back(hi);
    return;
  }
  const uint32_t m = lo + (hi - lo) / 2;
  const int fm = f(m);
  find_steps(f, lo, m, flo, fm, out);
  find_steps(f, m, hi, fm, fhi, out);
}

}  // namespace

namespace {

// Entries of one sign half with 2^m buckets per binade of [e_lo, e_hi]; counts slow buckets.
std::vector<qi::LutEntry> lut_half(const qi::Tables& t, uint32_t sign, const std::vector<uint32_t>& steps,
                                   uint32_t e_lo, uint32_t e_hi, int m, int* slow) {
  constexpr uint32_t kInf = 0x7F800000u;
  auto f = [&](uint32_t u) { return qi::closed_form(t.code, t.mid, qi::bits_float(u | sign << 31)); };
  const int nb = static_cast<int>(e_hi - e_lo + 1) << m, shift = 23 - m;
  const uint32_t bias = e_lo << m;
  std::vector<qi::LutEntry> out;
  *slow = 0;
  size_t next = 0;  // first step not yet placed
  for (int b = 0; b < nb; ++b) {
    const uint32_t lo = b == 0 ? 0 : (b + bias) << shift;
    const uint32_t hi = b == nb - 1 ? kInf : ((b + 1 + bias) << shift) - 1;
    while (next < steps.size() && steps[next] <= lo) ++next;
    size_t inside = 0;
    while (next + inside < steps.size() && steps[next + inside] <= hi) ++inside;
    qi::LutEntry e{0x80000000u, static_cast<uint8_t>(f(lo)), static_cast<uint8_t>(f(hi)), 0};
    if (inside == 1) e.thr = steps[next];
    if (inside > 1) {
      e.slow = 1;
      ++*slow;
    }
    out.push_back(e);
  }
  return out;
}

// The kernels' compact table (quant_index.cuh Compact): the largest scale exponent k whose
// subnormal band keeps every index, the steps of the index in ordered-bit space of x * 2^-k by
// bisection, the largest shift that leaves at most one step inside any slot, the slots of both
// domains (or of the clamped one only, when both need more than kMaxCompact), then one entry per
// slot. Leaves c->entries == 0 when nothing fits or a step skips an index.
void build_compact(const qi::Tables& t, qi::Compact* c, std::vector<uint32_t>* ct) {
  *c = qi::Compact{};
  ct->clear();
  c->floor = t.code[0];
  c->hi = std::max(qi::kMaxKernelX, t.code[0]);
  auto fx = [&](float x) { return qi::closed_form(t.code, t.mid, x); };
  // x' in [+0, 2^-126) stands for x in (0, 2^(k - 126)), x' in (-2^-126, -0] for +-0 and x in
  // (-2^(k - 126), 0): one index on each side (checked on the closed ranges).
  const int pos_q = fx(0x1p-149f), neg_q = fx(-0x1p-149f);
  if (fx(0.0f) != neg_q) return;
  int k = 125;
  for (; k >= 0; --k) {
    const float a = std::ldexp(1.0f, k - 126);
    if (fx(a) == pos_q && fx(-a) == neg_q) break;
  }
  if (k < 0) return;
  c->k = k;
  c->scale = std::ldexp(1.0f, -k);
  auto o_of = [&](float x) { return qi::ordered(qi::scale_down(x, c->scale)); };
  auto f = [&](int32_t o) {  // x' * 2^k: exact
    return o == -1 ? neg_q : o == 0 ? pos_q : fx(std::ldexp(qi::from_ordered(o), k));
  };
  // Clamped domain [code[0], hi] (fmaxf's zero, either sign, becomes -0); unclamped [-(1 + 2^-23),
  // 1 + 2^-23].
  const int32_t c_lo = o_of(t.code[0]);
  const int32_t c_hi = o_of(c->hi);
  const int32_t lo = std::min(c_lo, o_of(-qi::kMaxKernelX)), hi = std::max(c_hi, o_of(qi::kMaxKernelX));
  std::vector<uint32_t> steps;  // o + 2^31 (unsigned, so find_steps applies) where f(o) != f(o - 1)
  const uint32_t bias = 0x80000000u;
  find_steps([&](uint32_t u) { return f(static_cast<int32_t>(u - bias)); }, static_cast<uint32_t>(lo) + bias,
             static_cast<uint32_t>(hi) + bias, f(lo), f(hi), steps);
  for (uint32_t s : steps)
    if (f(static_cast<int32_t>(s - bias)) != f(static_cast<int32_t>(s - bias) - 1) + 1) return;  // skips an index
  // The largest shift with no two steps strictly inside one slot (a step at a slot's start
  // falls between slots).
  int sh = 23;
  for (; sh >= 2; --sh) {
    const uint32_t mask = (1u << sh) - 1;
    bool ok = true;
    int64_t last = INT64_MIN;
    for (uint32_t s : steps) {
      if ((s & mask) == 0) continue;
      const int64_t slot = static_cast<int64_t>(s >> sh);
      ok &= slot != last;
      last = slot;
    }
    if (ok) break;
  }
  if (sh < 2) return;
  const uint32_t mask = (1u << sh) - 1;
  int32_t kmin = lo >> sh, kmax = hi >> sh;
  c->noclamp = 1;
  if (int64_t{kmax} - kmin + 1 > qi::kMaxCompact) {
    kmin = c_lo >> sh, kmax = c_hi >> sh, c->noclamp = 0;
    if (int64_t{kmax} - kmin + 1 > qi::kMaxCompact) return;
  }
  for (int32_t key = kmin; key <= kmax; ++key) {
    const int32_t s = static_cast<int32_t>(static_cast<uint32_t>(key) << sh);
    const int q0 = f(s), q1 = f(s + static_cast<int32_t>(mask));
    const uint32_t top = static_cast<uint32_t>(key) << (sh + 8);
    uint32_t e;
    if (q1 == q0) {
      e = top + ((mask << 8 | static_cast<uint32_t>(q0)) + 1);
      if (e == 0) e = top - 1;  // index 255, key's low bits all ones: see Compact
    } else {
      // The one step inside the slot: the first low bits t with f = q1.
      uint32_t a = 0, b = mask;  // f(s + a) == q0, f(s + b) == q1
      while (b - a > 1) {
        const uint32_t m = a + (b - a) / 2;
        (f(s + static_cast<int32_t>(m)) == q0 ? a : b) = m;
      }
      e = top + (((b - 1) << 8 | static_cast<uint32_t>(q0)) + 1);
    }
    ct->push_back(e);
  }
  c->sh = sh;
  c->kmin = kmin;
  c->entries = static_cast<int32_t>(ct->size());
}

}  // namespace

IndexLut build_index_lut(const qi::Tables& t) {
  constexpr uint32_t kInf = 0x7F800000u;
  // Per sign half: the steps of the index (monotone in |x|, docs/quant.md) by bisection, the
  // exponent window holding them, then the fewest mantissa bits that leave at most one step per
  // bucket, shrunk (slow buckets allowed) if both halves together exceed kMaxLutEntries.
  std::vector<uint32_t> steps[2];
  uint32_t e_lo[2], e_hi[2];
  int m[2];
  for (uint32_t sign = 0; sign < 2; ++sign) {
    auto f = [&](uint32_t u) { return qi::closed_form(t.code, t.mid, qi::bits_float(u | sign << 31)); };
    find_steps(f, 0, kInf, f(0), f(kInf), steps[sign]);
    e_lo[sign] = steps[sign].empty() ? 0 : steps[sign].front() >> 23;
    e_hi[sign] = steps[sign].empty() ? 0 : steps[sign].back() >> 23;
    const int width = static_cast<int>(e_hi[sign] - e_lo[sign]) + 1;
    int slow = 0;
    for (m[sign] = 0;; ++m[sign]) {
      lut_half(t, sign, steps[sign], e_lo[sign], e_hi[sign], m[sign], &slow);
      if (slow == 0 || m[sign] == 8 || (width << (m[sign] + 1)) > qi::kMaxLutEntries) break;
    }
  }
  auto size = [&](int s) { return static_cast<int>(e_hi[s] - e_lo[s] + 1) << m[s]; };
  while (size(0) + size(1) > qi::kMaxLutEntries) --m[size(0) >= size(1) ? 0 : 1];
  IndexLut lut;
  for (int sign = 0; sign < 2; ++sign) {
    int slow = 0;
    const auto half = lut_half(t, static_cast<uint32_t>(sign), steps[sign], e_lo[sign], e_hi[sign], m[sign], &slow);
    lut.shape.shift[sign] = 23 - m[sign];
    lut.shape.bias[sign] = static_cast<int32_t>(e_lo[sign] << m[sign]);
    lut.shape.buckets[sign] = static_cast<int32_t>(half.size());
    lut.shape.first[sign] = static_cast<int32_t>(lut.entries.size());
    lut.entries.insert(lut.entries.end(), half.begin(), half.end());
    lut.slow_buckets += slow;
  }
  if (lut.entries.size() % 2) lut.entries.push_back({});  // whole 16-byte words on the GPU
  build_compact(t, &lut.compact, &lut.compact_entries);
  while (lut.compact_entries.size() % 4) lut.compact_entries.push_back(0);  // whole 16-byte words
  return lut;
}

namespace {

// Sums of 1024-element chunks in the CUDA kernel's order: 256 lanes each add x[t], x[t+256],
// x[t+512], x[t+768] in turn, then a halving tree over the lanes.
template <class T>
std::vector<double> chunk_sums(const T* x, int64_t n) {
  std::vector<double> out(static_cast<size_t>((n + 1023) / 1024));
  for (size_t c = 0; c < out.size(); ++c) {
    double p[256];
    for (int t = 0; t < 256; ++t) {
      p[t] = 0.0;
      for (int r = 0; r < 4; ++r) {
        const int64_t i = static_cast<int64_t>(c) * 1024 + r * 256 + t;
        if (i < n) p[t] += static_cast<double>(x[i]);
      }
    }
    for (int s = 128; s > 0; s >>= 1)
      for (int t = 0; t < s; ++t) p[t] += p[t + s];
    out[c] = p[0];
  }
  return out;
}

}  // namespace

float mean_tree(const float* x, int64_t n) {
  if (n == 0) return 0.0f;
  std::vector<double> s = chunk_sums(x, n);
  while (s.size() > 1) s = chunk_sums(s.data(), static_cast<int64_t>(s.size()));
  return static_cast<float>(s[0] / static_cast<double>(n));
}

void sub_offset(const float* x, int64_t n, float offset, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] - offset;
}

}  // namespace octet::cpu
