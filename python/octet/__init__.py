"""octet: 8-bit quantization, percentile clipping and FP8 matmuls (C++/CUDA) for any DLPack array.

Every function takes NumPy, PyTorch, CuPy, JAX (anything with ``__dlpack__``) and returns arrays of
the library of its first array argument, without copies: octet works in the caller's memory.
bf16 and fp8 NumPy arrays are ml_dtypes arrays. Errors are ``octet.Error`` (a RuntimeError);
refused arguments raise ``octet.ValueError`` (also a ValueError) and objects that are not arrays
``octet.TypeError`` (also a TypeError), each with octet's message.

``octet.torch`` (when PyTorch is installed) has autograd Functions and FP8 Linear modules;
``octet.compat.bitsandbytes`` has bitsandbytes 0.49.2's API for the features it removed.
docs/python.md is the guide.
"""
import contextlib as _contextlib
import pkgutil as _pkgutil

# In a build tree the extension sits in <build>/python/octet/ and this package in <source>/python/:
# one package over both folders (a no-op once installed).
__path__ = _pkgutil.extend_path(__path__, __name__)

from ._octet import (  # noqa: E402
    __version__, Array, ClipState, Code, Error, QuantState, TypeError, ValueError, asarray, cast_to_fp8, copy_,
    create_dynamic_map, create_fp8_map, create_linear_map, cuda_available, cuda_device_count,
    current_stream, default_device, dequantize, dequantize_blockwise, dequantize_fp8, device, dtype_name,
    fake_quantize, fake_quantize_blockwise, fp8_amax, fp8_block_sizes, fp8_current_scale, fp8_delayed_scale,
    fp8_max, fp8_tensor_core_forward, fp8_tensor_cores, from_dlpack, load_safetensors,
    load_safetensors_metadata, manual_seed, matmul_fp8, matmul_fp8_global, matmul_fp8_mixed,
    matmul_fp8_path, memory_stats, percentile_clipping, quantize, quantize_blockwise, rand, randn,
    save_safetensors, scale_, set_stream, synchronize,
)


@_contextlib.contextmanager
def stream(stream, device="cuda"):
    """Runs octet's work on ``device`` on ``stream`` inside the block, then restores the previous one.

    ``stream``: a cudaStream_t as an integer, or an object with ``cuda_stream`` (torch.cuda.Stream,
    cupy.cuda.Stream) or ``ptr``. The caller keeps the stream alive for the block.
    """
    handle = getattr(stream, "cuda_stream", getattr(stream, "ptr", stream))
    previous = current_stream(device)
    set_stream(device, handle)
    try:
        yield
    finally:
        set_stream(device, previous)

