"""Percentile clipping on NumPy: the golden sequence of bitsandbytes 0.49.2 in both forms (host step
with gnorm_vec; ClipState), scale_, and refused arguments."""
import numpy as np
import pytest

import octet
from conftest import bits


def test_percentile_clipping_golden_both_forms(golden):
    returns = golden["pclip.f32.returns"]
    vec = np.zeros(100, np.float32)
    state = octet.ClipState("cpu")
    for k in range(1, 13):
        grad = golden[f"pclip.f32.grad.{k}"]
        gnorm, clip_value, scale = octet.percentile_clipping(grad, vec, k)
        assert gnorm.shape == () and gnorm.dtype == np.float32
        np.testing.assert_allclose(vec, golden[f"pclip.f32.gnorm_vec.{k}"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose([gnorm, clip_value, scale], returns[k - 1], rtol=1e-5, atol=1e-6)
        assert scale == (1.0 if gnorm <= clip_value else np.float32(clip_value) / np.float32(gnorm))
        s = octet.percentile_clipping(grad, state)
        assert np.array_equal(bits(state.gnorm_vec), bits(vec))
        assert [bits(x) for x in s] == [bits(x) for x in (gnorm, clip_value, scale)]
    assert state.step == 13


def test_scale_applies_the_clipping_scale():
    grad = np.full(10, 4.0, np.float32)
    vec = np.zeros(100, np.float32)
    for step in range(1, 4):
        octet.percentile_clipping(np.ones(10, np.float32), vec, step)
    gnorm, clip_value, scale = octet.percentile_clipping(grad, vec, 4)
    assert scale < 1
    octet.scale_(grad, scale)
    np.testing.assert_allclose(np.linalg.norm(grad), clip_value, rtol=1e-6)


def test_refused_arguments():
    vec = np.zeros(100, np.float32)
    with pytest.raises(octet.ValueError, match="percentile_clipping: argument 'step'"):
        octet.percentile_clipping(np.ones(4, np.float32), vec, 0)
    with pytest.raises(octet.ValueError, match="percentile_clipping: argument 'grad'"):
        octet.percentile_clipping(np.ones(4, np.int64), vec, 1)
    with pytest.raises(octet.ValueError, match="gnorm_vec"):
        octet.percentile_clipping(np.ones(4, np.float32), np.zeros(99, np.float32), 1)
