"""octet.torch: PyTorch autograd Functions and nn.Modules over octet's FP8 kernels.

Functions (differentiable; gradients flow to torch leaves):
  matmul_fp8_mixed(A, B, fw_code=None, bw_code=None, bsz=-1, bsz2=-1, product="simulated")
  matmul_fp8_global(A, B, fw_code=None, bw_code=None)
  matmul_fp8(x, weight, bias=None, scaling=None)   y = x weight^T + bias on FP8 tensor cores
Modules (drop-in for torch.nn.Linear: same Parameters, same state_dict keys):
  LinearFP8Mixed, LinearFP8Global (bitsandbytes' research layers), LinearFP8 (real FP8 GEMMs,
  current or delayed scaling).

The forward and the gradients are octet's (its tape runs the backward); torch tensors go in and
out without copies (non-contiguous inputs are made contiguous first, as torch's own ops do). CUDA
work runs on torch's current stream, so torch and octet never race on memory. A backward runs
once per forward (octet frees a tape when it runs): retain_graph=True is not supported.
"""
import contextlib

import torch

from . import _octet

__all__ = ["Fp8Scaling", "LinearFP8", "LinearFP8Global", "LinearFP8Mixed", "matmul_fp8", "matmul_fp8_global",
           "matmul_fp8_mixed", "on_torch_stream"]


@contextlib.contextmanager
def on_torch_stream(where):
    """Runs octet's work for the GPU of ``where`` (a tensor or a torch.device) on torch's current
    stream of that GPU inside the block."""
    device = torch.device(getattr(where, "device", where))
    if device.type != "cuda":
        yield
        return
    index = device.index if device.index is not None else torch.cuda.current_device()
    ours = torch.cuda.current_stream(index).cuda_stream
    device = f"cuda:{index}"
    previous = _octet.current_stream(device)
    if ours == previous:
        yield
        return
    _octet.set_stream(device, ours)
    try:
        yield
    finally:
        _octet.set_stream(device, previous)


def _arg(t):
    return None if t is None else t.detach().contiguous()


class _Recorded(torch.autograd.Function):
    """Runs an octet call that records on octet's tape; backward runs octet's backward."""

    @staticmethod
    def forward(ctx, call, *tensors):
        needs = tuple(bool(n) for n in ctx.needs_input_grad[1:])
        ctx.device = tensors[0].device
        with on_torch_stream(ctx.device):
            out, ctx.recorded = call([_arg(t) for t in tensors], needs)
        return out

    @staticmethod
    def backward(ctx, grad):
        with on_torch_stream(ctx.device):
            grads = ctx.recorded.backward(grad.contiguous())
        ctx.recorded = None
        return (None, *grads)


def matmul_fp8_mixed(A, B, fw_code=None, bw_code=None, bsz=-1, bsz2=-1, product="simulated"):
    """A @ B with A blockwise- and B globally quantized with fw_code (E4M3 by default) in the forward,
    and the output gradient blockwise with bw_code (E5M2) in the backward, as bitsandbytes 0.49.2."""
    return _Recorded.apply(
        lambda t, needs: _octet.matmul_fp8_mixed_recorded(t[0], t[1], needs, fw_code, bw_code, bsz, bsz2, product), A, B)


def matmul_fp8_global(A, B, fw_code=None, bw_code=None):
    """A @ B with both operands globally quantized with fw_code (E4M3), the gradient with bw_code (E5M2)."""
    return _Recorded.apply(lambda t, needs: _octet.matmul_fp8_global_recorded(t[0], t[1], needs, fw_code, bw_code), A, B)


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, layer):
        needs = tuple(bool(n) for n in ctx.needs_input_grad[:3])
        ctx.device = x.device
        with on_torch_stream(ctx.device):
            y, ctx.recorded = layer.forward_recorded(_arg(x), _arg(weight), _arg(bias), needs)
        return y

    @staticmethod
    def backward(ctx, grad):
        with on_torch_stream(ctx.device):
            gx, gw, gb = ctx.recorded.backward(grad.contiguous())
        ctx.recorded = None
        return gx, gw, gb, None


class Fp8Scaling:
    """The scaling of matmul_fp8: "current" (from each tensor's own amax) or "delayed" (from an amax
    history of ``history_len`` steps, TransformerEngine's recipe; the histories live here, one set
    per weight shape). The weight always uses current scaling."""

    def __init__(self, recipe="current", history_len=1024, amax_algo="max", margin=0):
        self.recipe, self.history_len, self.amax_algo, self.margin = recipe, history_len, amax_algo, margin
        self._layers = {}

    def layer(self, in_features, out_features, bias):
        key = (in_features, out_features, bias)
        if key not in self._layers:
            layer = _octet.Layer("fp8", in_features, out_features, bias)
            layer.recipe, layer.history_len, layer.amax_algo, layer.margin = (
                self.recipe, self.history_len, self.amax_algo, self.margin)
            layer.crossover_macs = 0  # an FP8 matmul was asked for: FP8 at every size
            self._layers[key] = layer
        return self._layers[key]


def matmul_fp8(x, weight, bias=None, scaling=None):
    """y = x weight^T + bias with FP8 GEMMs (x and weight in E4M3, the output gradient in E5M2),
    x (..., in), weight (out, in), bias (out) in f32, bf16 or f16. scaling: an Fp8Scaling (keep the
    same one across steps for delayed scaling); None: current scaling."""
    scaling = scaling or Fp8Scaling()
    layer = scaling.layer(weight.shape[1], weight.shape[0], bias is not None)
    return _Linear.apply(x, weight, bias, layer)


class _LinearModule(torch.nn.Linear):
    """A torch.nn.Linear whose forward runs octet's layer of kind ``_kind`` on its own Parameters."""

    _kind = ""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self._layer = None

    def _octet_layer(self):
        if self._layer is None:
            self._layer = _octet.Layer(self._kind, self.in_features, self.out_features, self.bias is not None)
            self._configure(self._layer)
        return self._layer

    def _configure(self, layer):
        pass

    def forward(self, x):
        return _Linear.apply(x, self.weight, self.bias, self._octet_layer())

    def __getstate__(self):  # copy.deepcopy, pickle: octet's layer is made again on first use
        state = self.__dict__.copy()
        state["_layer"] = None
        return state


class LinearFP8Mixed(_LinearModule):
    """bitsandbytes' LinearFP8Mixed: x blockwise- and the weight globally E4M3-quantized in the forward,
    the output gradient blockwise E5M2 in the backward (block sizes from in/out features).
    product="tensor_cores" multiplies the same codes on FP8 tensor cores where that applies."""

    _kind = "mixed"

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None, product="simulated"):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.product = product

    def _configure(self, layer):
        layer.product = self.product


class LinearFP8Global(_LinearModule):
    """bitsandbytes' LinearFP8Global (which works here): every operand quantized globally."""

    _kind = "global"


class LinearFP8(_LinearModule):
    """y = x W^T + b with FP8 tensor-core GEMMs (E4M3 forward, E5M2 gradients), current or delayed
    scaling. Below ``crossover_macs`` multiply-adds per GEMM it runs plain GEMMs (None: octet's default)."""

    _kind = "fp8"

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None, recipe="current",
                 history_len=1024, amax_algo="max", margin=0, crossover_macs=None):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.recipe, self.history_len, self.amax_algo, self.margin = recipe, history_len, amax_algo, margin
        self.crossover_macs = crossover_macs

    def _configure(self, layer):
        layer.recipe, layer.history_len, layer.amax_algo, layer.margin = (
            self.recipe, self.history_len, self.amax_algo, self.margin)
        if self.crossover_macs is not None:
            layer.crossover_macs = self.crossover_macs

    @property
    def last_forward_fp8(self):
        """Whether the last forward ran FP8 GEMMs."""
        return self._layer is not None and self._layer.last_forward_fp8
