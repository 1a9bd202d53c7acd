"""Fixtures of the Python tests: the golden file of bitsandbytes 0.49.2 and the devices to run on.

The golden file is the repository's tests/data/bnb-0.49.2.safetensors (tests/data/README.md says
what produced it). A missing file fails the golden tests: it never skips them.
"""
import pathlib

import numpy as np
import pytest

import octet

ROOT = pathlib.Path(__file__).resolve().parents[2]
GOLDEN_NAME = "bnb-0.49.2.safetensors"


def golden_path():
    return ROOT / "tests" / "data" / GOLDEN_NAME


@pytest.fixture(scope="session")
def golden():
    path = golden_path()
    if not path.exists():
        pytest.fail(f"golden file {path} is missing")
    return octet.load_safetensors(str(path))


def bits(a):
    """The raw bits of an array (NumPy), for bit-for-bit comparisons."""
    a = np.ascontiguousarray(a)
    return a.view(np.dtype(f"u{a.dtype.itemsize}"))


def torch_devices():
    """The devices torch cases run on: cpu, and cuda when a GPU is there (skipped by name otherwise)."""
    return ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not octet.cuda_available(), reason="no CUDA device"))]
