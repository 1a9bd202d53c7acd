"""The octet module's core: errors, devices, streams, random numbers, safetensors files, and the
DLPack exchange (zero-copy both ways, capsule protocol, read-only arrays, ml_dtypes)."""
import ctypes

import ml_dtypes
import numpy as np
import pytest

import octet

_name = ctypes.pythonapi.PyCapsule_GetName
_name.restype, _name.argtypes = ctypes.c_char_p, [ctypes.py_object]


def capsule_name(capsule):
    return _name(capsule).decode()


def test_error_classes():
    assert issubclass(octet.Error, RuntimeError)
    assert issubclass(octet.ValueError, octet.Error) and issubclass(octet.ValueError, ValueError)
    assert issubclass(octet.TypeError, octet.Error) and issubclass(octet.TypeError, TypeError)
    with pytest.raises(octet.ValueError, match=r"Device::parse: argument 'name': expected cpu, cuda or cuda:N, got tpu"):
        octet.device("tpu")
    with pytest.raises(octet.Error, match="No such file|cannot open|file"):
        octet.load_safetensors("/nonexistent/x.safetensors")


def test_devices_and_dtypes():
    assert octet.device("cuda") == "cuda:0" and octet.device("cpu") == "cpu"
    assert octet.cuda_available() == (octet.cuda_device_count() > 0)
    assert octet.default_device() == ("cuda:0" if octet.cuda_available() else "cpu")
    assert [octet.dtype_name(d) for d in ("float16", np.dtype("float32"), "bf16",
                                          ml_dtypes.float8_e4m3fn, "uint8")] == ["f16", "f32", "bf16", "f8_e4m3", "u8"]
    with pytest.raises(octet.ValueError, match="expected a dtype"):
        octet.dtype_name("complex64")


@pytest.mark.skipif(octet.cuda_available(), reason="checks the behaviour without a GPU")
def test_cuda_without_gpu_raises():
    with pytest.raises(octet.Error):
        octet.rand((4,), device="cuda")
    with pytest.raises(octet.Error):
        octet.current_stream("cuda")


@pytest.mark.skipif(not octet.cuda_available(), reason="no CUDA device")
def test_streams_set_and_restore():
    own = octet.current_stream("cuda")
    with octet.stream(2):  # the per-thread default stream
        assert octet.current_stream("cuda") == 2
    assert octet.current_stream("cuda") == own
    octet.synchronize("cuda")


def test_random_is_reproducible():
    octet.manual_seed(7)
    a = octet.rand((1000,))
    b = octet.randn((3, 5), "f64")
    octet.manual_seed(7)
    assert np.array_equal(a, octet.rand((1000,)))
    assert np.array_equal(b, octet.randn((3, 5), "f64"))
    assert a.dtype == np.float32 and b.dtype == np.float64 and 0 < a.min() and a.max() <= 1


def test_safetensors_round_trip(tmp_path):
    tensors = {"w": np.arange(12, dtype=np.float32).reshape(3, 4),
               "h": np.array([1.5, -2], ml_dtypes.bfloat16),
               "c": np.arange(5, dtype=np.uint8)}
    path = str(tmp_path / "t.safetensors")
    octet.save_safetensors(path, tensors, {"by": "test"})
    back = octet.load_safetensors(path)
    assert sorted(back) == ["c", "h", "w"]
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and np.array_equal(back[k], v)
    assert octet.load_safetensors_metadata(path) == {"by": "test"}


# ---- DLPack -------------------------------------------------------------------------------------

def test_import_is_zero_copy():
    x = np.arange(10, dtype=np.float32)
    a = octet.asarray(x)
    assert a.data_ptr == x.ctypes.data and a.shape == (10,) and a.dtype == "f32" and a.device == "cpu"
    y = np.from_dlpack(a)
    assert y.ctypes.data == x.ctypes.data
    octet.scale_(x, np.full((), 0.5, np.float32))  # writes into x itself
    assert np.array_equal(x, np.arange(10, dtype=np.float32) * 0.5)
    bf = np.ones(4, ml_dtypes.bfloat16)
    assert octet.asarray(bf).data_ptr == bf.ctypes.data and octet.asarray(bf).dtype == "bf16"


def test_results_are_zero_copy_exports():
    codes, state = octet.quantize_blockwise(np.ones(100, np.float32), blocksize=64)
    again = state.absmax
    assert state.absmax.ctypes.data == again.ctypes.data  # the state's own memory, each time


def test_out_arguments_write_in_place():
    dst = np.zeros(6, np.float32)
    ptr = dst.ctypes.data
    octet.copy_(dst, np.arange(6, dtype=np.float16))
    assert dst.ctypes.data == ptr and np.array_equal(dst, np.arange(6, dtype=np.float32))


def test_read_only_arrays_are_not_written():
    x = np.ones(4, np.float32)
    x.flags.writeable = False
    with pytest.raises(octet.ValueError, match="octet.scale_: argument 'grad': expected a writable array, got a read-only one"):
        octet.scale_(x, np.full((), 2, np.float32))
    assert octet.quantize(x)[0].shape == (4,)  # reading is fine


def test_capsule_protocol_versions_and_renaming():
    a = octet.asarray(np.arange(3, dtype=np.int64))
    versioned = a.__dlpack__(max_version=(1, 1))
    assert capsule_name(versioned) == "dltensor_versioned"
    legacy = a.__dlpack__()
    assert capsule_name(legacy) == "dltensor"
    assert a.__dlpack_device__() == (1, 0)
    with pytest.raises(BufferError):
        a.__dlpack__(stream=1)  # streams are for CUDA arrays
    with pytest.raises(BufferError):
        a.__dlpack__(copy=True)
    del versioned, legacy  # unconsumed capsules free their tensors

    class Producer:  # hands out NumPy's capsule and keeps it, to look at its name afterwards
        def __init__(self, x):
            self.x, self.capsules = x, []

        def __dlpack__(self, **kwargs):
            self.capsules.append(self.x.__dlpack__(**kwargs))
            return self.capsules[-1]

        def __dlpack_device__(self):
            return self.x.__dlpack_device__()

    p = Producer(np.arange(4, dtype=np.float32))
    assert octet.asarray(p).data_ptr == p.x.ctypes.data
    assert capsule_name(p.capsules[-1]) == "used_dltensor_versioned"

    class LegacyProducer(Producer):  # before DLPack 1.0: no max_version
        def __dlpack__(self, stream=None):
            self.capsules.append(self.x.__dlpack__())
            return self.capsules[-1]

    p = LegacyProducer(np.arange(4, dtype=np.float32))
    assert octet.asarray(p).data_ptr == p.x.ctypes.data
    assert capsule_name(p.capsules[-1]) == "used_dltensor"


def test_refused_exports_do_not_leak_or_crash():
    class NotArray:
        def __dlpack__(self, **kwargs):
            return 42

        def __dlpack_device__(self):
            return (1, 0)

    with pytest.raises(octet.TypeError, match="expected __dlpack__ to return a DLPack capsule"):
        octet.asarray(NotArray())
    x = np.ones((4, 4), np.float32)
    with pytest.raises(octet.ValueError):
        octet.asarray(x.T)  # strided: refused, the capsule goes back to NumPy


def test_like_names_the_result_library():
    assert isinstance(octet.rand((3,), like=np), np.ndarray)
    assert isinstance(octet.create_dynamic_map(like=None), np.ndarray)
    x = np.arange(6, dtype=np.float64)
    y = octet.from_dlpack(x, like=np)  # the same memory, back as NumPy
    assert isinstance(y, np.ndarray) and y.ctypes.data == x.ctypes.data
    assert isinstance(octet.from_dlpack(x, like=octet.asarray(x)), octet.Array)


def test_results_of_an_unknown_library_are_octet_arrays():
    class Foreign:  # an array type of a module without from_dlpack
        def __init__(self, x):
            self.x = x

        def __dlpack__(self, **kwargs):
            return self.x.__dlpack__(**kwargs)

        def __dlpack_device__(self):
            return self.x.__dlpack_device__()

    out = octet.fake_quantize(Foreign(np.linspace(-1, 1, 9, dtype=np.float32)))
    assert isinstance(out, octet.Array) and out.shape == (9,) and out.dtype == "f32"
    assert np.array_equal(np.from_dlpack(out), octet.fake_quantize(np.linspace(-1, 1, 9, dtype=np.float32)))
    assert isinstance(octet.fake_quantize(octet.asarray(np.ones(3, np.float32))), octet.Array)
