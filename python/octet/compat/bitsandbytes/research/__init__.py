"""bitsandbytes 0.49.2's ``bitsandbytes.research``: the simulated FP8 matmuls (differentiable on
PyTorch tensors through octet.torch; plain functions on other arrays) and ``research.nn`` (needs
PyTorch, imported on first use)."""
import importlib

import octet


def _is_torch(A):
    return type(A).__module__.startswith("torch")


def matmul_fp8_mixed(A, B, fw_code=None, bw_code=None, out=None, bsz=-1, bsz2=-1):
    """A @ B with A blockwise- and B globally quantized with fw_code, the output gradient blockwise
    with bw_code. ``out`` is accepted and ignored, as in 0.49.2. octet: fw_code/bw_code may be left
    out (E4M3/E5M2); a table array is checked on every call (pass None or an octet.Code to avoid
    that read); empty inputs give zeros where 0.49.2 returned uninitialized memory; for 3-D A the
    weight gradient is summed over the batch by octet."""
    if _is_torch(A):
        from octet import torch as octet_torch
        return octet_torch.matmul_fp8_mixed(A, B, fw_code, bw_code, bsz, bsz2)
    return octet.matmul_fp8_mixed(A, B, fw_code, bw_code, bsz, bsz2)


def matmul_fp8_global(A, B, fw_code=None, bw_code=None, out=None, bsz=-1, bsz2=-1):
    """A @ B with both operands globally quantized with fw_code and the gradient with bw_code;
    bsz/bsz2 are accepted and unused, as in 0.49.2 (see matmul_fp8_mixed for octet's differences)."""
    if _is_torch(A):
        from octet import torch as octet_torch
        return octet_torch.matmul_fp8_global(A, B, fw_code, bw_code)
    return octet.matmul_fp8_global(A, B, fw_code, bw_code)


def __getattr__(name):
    if name == "nn":
        return importlib.import_module(".nn", __name__)
    raise AttributeError(name)
