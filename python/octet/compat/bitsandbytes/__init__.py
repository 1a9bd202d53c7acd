"""bitsandbytes 0.49.2's API for the features it removed, on octet: ``functional`` (quantize,
dequantize, quantize_blockwise, dequantize_blockwise, percentile_clipping, the code tables,
QuantState) and ``research`` (matmul_fp8_mixed, matmul_fp8_global, ``research.nn``'s
LinearFP8Mixed and LinearFP8Global). Code written for 0.49.2 runs after
``import octet.compat.bitsandbytes as bitsandbytes``; the docstrings say where octet differs.
"""
from . import functional, research  # noqa: F401
from .research import matmul_fp8_global, matmul_fp8_mixed  # noqa: F401

__version__ = "0.49.2"
