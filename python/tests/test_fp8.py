"""The FP8 matmuls on NumPy: bitsandbytes' simulated FP8 product (its definition through
fake quantization, block sizes, refused operands) and the real FP8 family (scales, GEMM)."""
import ml_dtypes
import numpy as np
import pytest

import octet


def test_matmul_fp8_mixed_is_the_product_of_fake_quantized_operands():
    rng = np.random.default_rng(4)
    A = rng.standard_normal((32, 48)).astype(np.float32)
    B = rng.standard_normal((48, 40)).astype(np.float32)
    assert octet.fp8_block_sizes(A, B) == (64, 64)
    out = octet.matmul_fp8_mixed(A, B)
    Aq = octet.fake_quantize_blockwise(A, octet.Code.fp8_e4m3(), 64)
    Bq = octet.fake_quantize(B, octet.Code.fp8_e4m3())
    ref = Aq.astype(np.float64) @ Bq.astype(np.float64)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-4)
    g = octet.matmul_fp8_global(A, B)
    Ag = octet.fake_quantize(A, octet.Code.fp8_e4m3())
    np.testing.assert_allclose(g, Ag.astype(np.float64) @ Bq.astype(np.float64), rtol=1e-5, atol=1e-4)
    # golden mm_mixed is f16; codes as tables work like Code objects
    table = octet.create_fp8_map(True, 4, 3, 8)
    assert np.array_equal(octet.matmul_fp8_mixed(A, B, table, None), out)


def test_matmul_fp8_mixed_golden_forward(golden):
    A, B = golden["mm_mixed.f16.32x48x40.A"], golden["mm_mixed.f16.32x48x40.B"]
    out = octet.matmul_fp8_mixed(A, B)
    assert out.dtype == np.float16
    # bitsandbytes' output and ours are f16 GEMMs of the same quantized operands
    np.testing.assert_allclose(out.astype(np.float32), golden["mm_mixed.f16.32x48x40.out"].astype(np.float32),
                               rtol=2e-3, atol=2e-2)


def test_matmul_fp8_refuses_mismatched_operands():
    with pytest.raises(octet.ValueError, match="matmul_fp8_mixed: argument 'B'"):
        octet.matmul_fp8_mixed(np.ones((4, 8), np.float32), np.ones((8, 3), np.float16))
    with pytest.raises(octet.ValueError, match="product"):
        octet.matmul_fp8_mixed(np.ones((4, 8), np.float32), np.ones((8, 3), np.float32), product="fast")


def test_real_fp8_gemm_and_scales():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((16, 32)).astype(np.float32)
    w = rng.standard_normal((24, 32)).astype(np.float32)
    amax = np.zeros(1, np.float32)
    scale, scale_inv = octet.fp8_current_scale(np.array([np.abs(x).max()], np.float32), "f8_e4m3")
    assert np.isclose(scale * scale_inv, 1) and np.isclose(scale, 448 / np.abs(x).max())
    xq, _, _ = octet.cast_to_fp8(x, "f8_e4m3", np.atleast_1d(scale), amax)
    assert amax[0] == np.abs(x).max()  # written in place
    ws, ws_inv = octet.fp8_current_scale(np.array([np.abs(w).max()], np.float32), "f8_e4m3")
    wq, _, _ = octet.cast_to_fp8(w, "f8_e4m3", np.atleast_1d(ws))
    y = octet.matmul_fp8(xq, wq, np.atleast_1d(scale_inv), np.atleast_1d(ws_inv), "f32")
    ref = (xq.astype(np.float64) * scale_inv) @ (wq.astype(np.float64) * ws_inv).T
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-4)
    assert octet.matmul_fp8_path(xq, wq) == "cpu_emulation"
    assert octet.fp8_max("f8_e4m3") == 448 and octet.fp8_max(ml_dtypes.float8_e5m2) == 57344
    history = np.zeros(16, np.float32)
    history[0] = 2.0
    s2, s2_inv = octet.fp8_delayed_scale(history, np.ones((), np.float32), np.ones((), np.float32), "f8_e4m3")
    assert s2 == np.float32(224) and history[1] == 2.0 and history[0] == 0  # rolled in place
