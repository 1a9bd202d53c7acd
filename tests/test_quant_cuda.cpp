// Tests of the quant family, part three: CPU vs CUDA bit for bit (codes, absmax, dequantized and
// fake-quantized values; every table and the LUT fallback; amax hints; the 16-bit pattern table;
// fake_quantize_pair's side job; the kernels on poisoned buffers and unaligned views) and a
// > 2^31-element case (OCTET_LARGE=1). Every case here needs a GPU.
#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

#include "kernels/quant.cuh"
#include "src/amax_hint.hpp"
#include "src/cpu/fp8_gemm.hpp"
#include "src/cpu/quant.hpp"
#include "src/runtime_internal.hpp"
#include "tests/quant_test_helpers.hpp"

using namespace octet;
using namespace octet::quant_test;

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
