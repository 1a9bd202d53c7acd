"""bitsandbytes 0.49.2's ``bitsandbytes.functional`` for the features it removed, on octet.

Same names, signatures, defaults and return structures; arrays of any library (PyTorch tensors as
bitsandbytes took, NumPy arrays, anything with ``__dlpack__``) on the CPU or CUDA. Where octet
deliberately differs from 0.49.2, each function's docstring says so; the common ones:

* Blockwise codes use a correctly rounded reciprocal of absmax, so a code may rarely be one index
  apart from 0.49.2's CUDA result (its approximate reciprocal); global quantize divides, as 0.49.2.
* An all-zero block or tensor gets the code of 0 and dequantizes to +0 (0.49.2: index 0 and -0).
* Every size works (empty inputs give empty results), blocksize 32 works, f16/bf16 go through
  global quantize too, and nothing is validated less than octet validates it (bad inputs raise
  octet.ValueError instead of producing garbage).
"""
import octet

__all__ = ["QuantState", "create_dynamic_map", "create_fp8_map", "create_linear_map", "dequantize",
           "dequantize_blockwise", "percentile_clipping", "quantize", "quantize_blockwise", "name2qmap"]

name2qmap = {}


def _default_library():
    """Tables are torch tensors when PyTorch is installed (as 0.49.2 made them), else NumPy arrays."""
    try:
        import torch
        return torch
    except ImportError:
        import numpy
        return numpy


def _detached(A):
    # bitsandbytes' functions take tensors that require grad; their results carry no gradient
    return A.detach() if getattr(A, "requires_grad", False) else A


def _device(A):
    return octet.asarray(A).device


def create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8):
    """The dynamic 8-bit table (float32 [256], on the CPU)."""
    return octet.create_dynamic_map(signed, max_exponent_bits, total_bits, like=_default_library())


def create_fp8_map(signed=True, exponent_bits=5, precision_bits=2, total_bits=8):
    """An FP8-like table (float32 [256], on the CPU). Invalid bit counts raise octet.ValueError
    (0.49.2: AssertionError)."""
    return octet.create_fp8_map(signed, exponent_bits, precision_bits, total_bits, like=_default_library())


def create_linear_map(signed=True, total_bits=8, add_zero=True):
    """The linear table (float32 [256], on the CPU). octet: only ``add_zero=True`` (the default)."""
    if not add_zero:
        raise NotImplementedError("octet.compat.bitsandbytes.create_linear_map: add_zero=False is not supported")
    return octet.create_linear_map(signed, total_bits, like=_default_library())


class QuantState:
    """bitsandbytes' QuantState for 8-bit blockwise and global states: absmax, shape, code,
    blocksize, dtype, offset and state2 (nested absmax), ``nested``; ``to(device)`` for torch arrays."""

    def __init__(self, absmax, shape=None, code=None, blocksize=None, quant_type=None, dtype=None, offset=None,
                 state2=None):
        self.absmax, self.shape, self.code, self.blocksize = absmax, shape, code, blocksize
        self.quant_type, self.dtype, self.offset, self.state2 = quant_type, dtype, offset, state2
        self.nested = state2 is not None

    def to(self, device):
        self.code = self.code.to(device)
        self.absmax = self.absmax.to(device)
        if self.nested:
            self.offset = self.offset.to(device)
            self.state2.to(device)
        return self

    def _octet(self, blocksize_default=0):
        inner = self.state2._octet() if self.nested else None
        blocksize = self.blocksize if self.blocksize is not None else blocksize_default
        return octet.QuantState(self.absmax, self.code, blocksize, self.dtype, tuple(self.shape), offset=self.offset,
                                state2=inner)

    @classmethod
    def _from_octet(cls, state, shape, dtype):
        inner = cls._from_octet(state.state2, state.state2.shape, state.state2.dtype) if state.nested else None
        return cls(absmax=state.absmax, shape=shape, code=state.code, blocksize=state.blocksize, dtype=dtype,
                   offset=state.offset, state2=inner)


def _write(out, result):
    if out is None:
        return result
    octet.copy_(out, result)
    return out


def quantize(A, code=None, out=None):
    """Global 8-bit quantization: ``(out, (absmax, code))``, one absmax for the whole tensor.

    octet: any device (0.49.2: CUDA only), f32/f16/bf16 inputs (0.49.2 misreads f16), empty inputs,
    and the code table is validated."""
    A = _detached(A)
    codes, state = octet.quantize(A, code)
    return _write(out, codes), (state.absmax.reshape(()), state.code)


def dequantize(A, state=None, absmax=None, code=None, out=None):
    """``code[A] * absmax`` in float32. octet: ``out`` receives the dequantized values and is
    returned (0.49.2 wrote the unscaled table values into ``out`` and returned a new tensor)."""
    if state is not None:
        absmax, code = state
    if absmax is None:
        raise ValueError("dequantize: needs state or absmax")
    if code is None:
        code = octet.Code().table(_device(A), like=A)
    st = octet.QuantState(absmax.reshape(1), code, 0, "f32", tuple(A.shape))
    return _write(out, octet.dequantize(A, st))


def quantize_blockwise(A, code=None, absmax=None, out=None, blocksize=4096, nested=False):
    """Blockwise 8-bit quantization: ``(out, QuantState)`` with an absmax per ``blocksize``
    consecutive elements; ``nested`` quantizes the absmax again (dynamic table, same blocksize).
    ``out``/``absmax`` receive copies of the results, as in 0.49.2.

    octet: blocksize 32 works (0.49.2 returned uninitialized memory), empty inputs work (0.49.2
    exited the process), every device (CPU codes equal CUDA codes)."""
    A = _detached(A)
    codes, state = octet.quantize_blockwise(A, code, blocksize, nested)
    qs = QuantState._from_octet(state, A.shape, A.dtype)
    if absmax is not None:
        octet.copy_(absmax, qs.absmax)
        qs.absmax = absmax
    return _write(out, codes), qs


def dequantize_blockwise(A, quant_state=None, absmax=None, code=None, out=None, blocksize=4096, nested=False):
    """Blockwise dequantization in ``quant_state.dtype`` (float32 without a state), shape of A.
    With quant_state, its code, blocksize and dtype win over the arguments, as in 0.49.2."""
    if quant_state is None:
        if absmax is None:
            raise ValueError("dequantize_blockwise: needs quant_state or absmax")
        if code is None:
            code = octet.Code().table(_device(A), like=A)
        quant_state = QuantState(absmax=absmax, shape=A.shape, code=code, blocksize=blocksize, dtype="f32")
    return _write(out, octet.dequantize_blockwise(A, quant_state._octet(blocksize)))


def percentile_clipping(grad, gnorm_vec, step, percentile=5):
    """One step of percentile clipping: ``(current_gnorm, clip_value, gnorm_scale)``; gnorm_vec
    (float32 [100] squared norms) is updated in place.

    octet: gnorm_scale is always a 0-dim float32 array on grad's device (0.49.2: the Python float
    1.0 when no clipping happens, which cost a host synchronization); step must be >= 1; bf16
    gradients work; any device."""
    return octet.percentile_clipping(_detached(grad), gnorm_vec, step, percentile)
