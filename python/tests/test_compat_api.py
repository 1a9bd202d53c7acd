"""octet.compat.bitsandbytes: bitsandbytes 0.49.2's names, signatures, defaults and return
structures, out= arguments written in place, and states built from parts (on NumPy)."""
import inspect

import numpy as np
import pytest

import octet
import octet.compat.bitsandbytes as bnb

SIGNATURES = {
    bnb.functional.quantize: "(A, code=None, out=None)",
    bnb.functional.dequantize: "(A, state=None, absmax=None, code=None, out=None)",
    bnb.functional.quantize_blockwise: "(A, code=None, absmax=None, out=None, blocksize=4096, nested=False)",
    bnb.functional.dequantize_blockwise:
        "(A, quant_state=None, absmax=None, code=None, out=None, blocksize=4096, nested=False)",
    bnb.functional.percentile_clipping: "(grad, gnorm_vec, step, percentile=5)",
    bnb.functional.create_dynamic_map: "(signed=True, max_exponent_bits=7, total_bits=8)",
    bnb.functional.create_fp8_map: "(signed=True, exponent_bits=5, precision_bits=2, total_bits=8)",
    bnb.functional.create_linear_map: "(signed=True, total_bits=8, add_zero=True)",
    bnb.research.matmul_fp8_mixed: "(A, B, fw_code=None, bw_code=None, out=None, bsz=-1, bsz2=-1)",
    bnb.research.matmul_fp8_global: "(A, B, fw_code=None, bw_code=None, out=None, bsz=-1, bsz2=-1)",
}


@pytest.mark.parametrize("fn", SIGNATURES, ids=lambda f: f.__name__)
def test_signatures(fn):
    assert str(inspect.signature(fn)) == SIGNATURES[fn]


def test_quantize_returns_and_out():
    A = np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32)
    out = np.zeros((16, 16), np.uint8)
    C, (absmax, code) = bnb.functional.quantize(A, out=out)
    assert C is out and out.any()
    assert absmax.shape == () and absmax == np.abs(A).max() and code.shape == (256,)
    deq = np.zeros_like(A)
    assert bnb.functional.dequantize(C, (absmax, code), out=deq) is deq
    assert np.abs(deq - A).mean() < 0.0135
    assert np.array_equal(bnb.functional.dequantize(C, absmax=absmax), deq)


def test_quantize_blockwise_state_and_out_arguments():
    A = np.random.default_rng(1).standard_normal(5000).astype(np.float16)
    out, absmax = np.zeros(5000, np.uint8), np.zeros(79, np.float32)
    C, S = bnb.functional.quantize_blockwise(A, absmax=absmax, out=out, blocksize=64)
    assert C is out and S.absmax is absmax and absmax.any()
    assert S.blocksize == 64 and S.dtype == np.float16 and tuple(S.shape) == (5000,) and not S.nested
    deq = bnb.functional.dequantize_blockwise(C, S)
    assert deq.dtype == np.float16
    # without a state: absmax and code, dtype float32, as 0.49.2
    plain = bnb.functional.dequantize_blockwise(C, absmax=absmax, blocksize=64)
    assert plain.dtype == np.float32 and np.array_equal(plain.astype(np.float16), deq)
    target = np.zeros(5000, np.float16)
    assert bnb.functional.dequantize_blockwise(C, S, out=target) is target and np.array_equal(target, deq)


def test_nested_state():
    A = np.random.default_rng(2).standard_normal(64 * 100).astype(np.float32)
    C, S = bnb.functional.quantize_blockwise(A, blocksize=64, nested=True)
    assert S.nested and S.state2 is not None and S.offset.shape == () and S.absmax.dtype == np.uint8
    assert np.abs(bnb.functional.dequantize_blockwise(C, S) - A).mean() < 0.02


def test_tables_and_differences():
    assert np.array_equal(np.asarray(bnb.functional.create_dynamic_map()), octet.create_dynamic_map())
    with pytest.raises(NotImplementedError):
        bnb.functional.create_linear_map(add_zero=False)
    g = np.ones((4, 4), np.float32)
    gnorm, clip, scale = bnb.functional.percentile_clipping(g, np.zeros(100, np.float32), 1)
    assert scale.shape == () and scale == 1  # a device scalar, not the Python float 1.0
    with pytest.raises(ValueError):
        bnb.functional.percentile_clipping(g, np.zeros(100, np.float32), 0)


def test_research_on_numpy():
    A = np.random.default_rng(3).standard_normal((8, 64)).astype(np.float32)
    B = np.random.default_rng(4).standard_normal((64, 16)).astype(np.float32)
    fw, bw = bnb.functional.create_fp8_map(True, 4, 3, 8), bnb.functional.create_fp8_map(True, 5, 2, 8)
    out = bnb.research.matmul_fp8_mixed(np.asarray(A), B, np.asarray(fw), np.asarray(bw))
    assert np.array_equal(out, octet.matmul_fp8_mixed(A, B))
    assert bnb.matmul_fp8_global(A, B).shape == (8, 16)
