"""bitsandbytes 0.49.2's ``bitsandbytes.research.nn``: LinearFP8Mixed and LinearFP8Global
(torch.nn.Linear subclasses; weight (out, in), bias (out), torch's initialization). Needs PyTorch.

As in 0.49.2: ``bsz``/``bsz2`` are picked from the features, ``fw_code``/``bw_code`` start as None
and are made on the first forward on x's device (E4M3 / E5M2 tables, plain attributes, not in the
state_dict). octet: LinearFP8Global works (0.49.2's raised AttributeError); with the attributes
left as they are the forward runs octet's layer directly; after changing them it runs
``research.matmul_fp8_*(x, weight.t(), ...)`` + bias as 0.49.2 did.
"""
from octet import torch as octet_torch

from .. import functional as F
from . import matmul_fp8_global, matmul_fp8_mixed

__all__ = ["LinearFP8Global", "LinearFP8Mixed"]


class _Bitsandbytes:
    _matmul = None

    def _setup(self):
        self.fw_code = self.bw_code = None
        self._defaults = None
        layer = self._octet_layer()
        self.bsz, self.bsz2 = layer.bsz, layer.bsz2

    def forward(self, x):
        if self.fw_code is None:
            self.bw_code = F.create_fp8_map(True, 5, 2, 8).to(x.device)
            self.fw_code = F.create_fp8_map(True, 4, 3, 8).to(x.device)
            self._defaults = (self.fw_code, self.bw_code)
        layer = self._octet_layer()
        defaults = self._defaults is not None and self._defaults[0] is self.fw_code and self._defaults[1] is self.bw_code
        if defaults and (self.bsz, self.bsz2) == (layer.bsz, layer.bsz2):
            return super().forward(x)
        out = type(self)._matmul(x, self.weight.t(), fw_code=self.fw_code, bw_code=self.bw_code, bsz=self.bsz,
                                 bsz2=self.bsz2)
        if self.bias is not None:
            out += self.bias
        return out


class LinearFP8Mixed(_Bitsandbytes, octet_torch.LinearFP8Mixed):
    _matmul = staticmethod(matmul_fp8_mixed)

    def __init__(self, input_features, output_features, bias=True):
        super().__init__(input_features, output_features, bias)
        self._setup()


class LinearFP8Global(_Bitsandbytes, octet_torch.LinearFP8Global):
    _matmul = staticmethod(matmul_fp8_global)

    def __init__(self, input_features, output_features, bias=True):
        super().__init__(input_features, output_features, bias)
        self._setup()
