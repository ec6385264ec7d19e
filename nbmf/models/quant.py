"""Fake quantization for quantization-aware training.

The integer runtime (nbmf/runtime) computes with int8 activations and weights; these modules make the
float model see the same rounding during QAT so the exported int8 model loses little. Every quantized
activation keeps a running max (``amax``) whether or not QAT is on: export reads it as the tensor's scale.
"""
from __future__ import annotations

import torch
from torch import nn

QMAX = 127
NORM_SCALE = 1.0 / 20.0  # norm outputs are int8 in units of 1/20 (range +-6.35 RMS units): fixed, no calibration


def fake_quant(x: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """Round to the int8 grid ``scale * [-127, 127]`` with a straight-through gradient."""
    q = torch.clamp(torch.round(x / scale), -QMAX, QMAX) * scale
    return x + (q - x).detach()


def fake_quant_weight(w: torch.Tensor) -> torch.Tensor:
    """Per-output-row symmetric int8 (rows of ``w`` are output channels), straight-through."""
    scale = w.detach().abs().amax(dim=-1, keepdim=True).clamp_min(1e-8) / QMAX
    return fake_quant(w, scale)


class ActQuant(nn.Module):
    """An int8 activation point: tracks max |x| (EMA) and, with QAT on, rounds to its grid."""

    def __init__(self, momentum: float = 0.01):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("amax", torch.zeros(()))
        self.qat = False

    @property
    def scale(self) -> float:
        return float(self.amax.clamp_min(1e-6)) / QMAX

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                # a high quantile, not the max: one outlier must not waste the whole int8 range
                cur = torch.quantile(x.detach().abs().flatten()[:65536].float(), 0.9999)
                if self.amax == 0:
                    self.amax.copy_(cur)
                else:
                    self.amax.lerp_(cur, self.momentum)
        if not self.qat or self.amax == 0:
            return x
        return fake_quant(x, self.amax.clamp_min(1e-6) / QMAX)


class QLinear(nn.Linear):
    """Linear without bias whose (gain-folded) weight is int8 per output row under QAT.

    ``in_gain`` is the gain of the RMSNorm in front of this layer: the runtime folds it into the weight
    (``W * gain``), so QAT quantizes exactly that product.
    """

    def __init__(self, d_in: int, d_out: int, in_gain: bool = False):
        super().__init__(d_in, d_out, bias=False)
        self.in_gain = nn.Parameter(torch.ones(d_in)) if in_gain else None
        self.qat = False

    def folded_weight(self) -> torch.Tensor:
        return self.weight if self.in_gain is None else self.weight * self.in_gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.folded_weight()
        return nn.functional.linear(x, fake_quant_weight(w) if self.qat else w)


class RMSNormQ(nn.Module):
    """Parameter-free RMSNorm whose output lands on the fixed int8 grid of NORM_SCALE under QAT.

    Its gain lives in the next QLinear (``in_gain``), as the runtime folds it there.
    """

    def __init__(self, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.qat = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return fake_quant(y, NORM_SCALE) if self.qat else y
