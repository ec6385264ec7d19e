"""The causal probability model: one block structure, four token mixers.

Every family is a stack of pre-norm residual blocks ``x += mixer(norm(x)); x += mlp(norm(x))``; the
family only chooses each layer's mixer:

- ``transformer``: causal multi-head attention with ALiBi position bias (no position table, so a
  sliding window of ``context`` tokens decodes records of any length with cached keys/values);
- ``cnn``: causal dilated depthwise convolution (dilation ``kernel_size ** i``; cached input history);
- ``recurrent``: minGRU (Feng et al. 2024): ``h = (1 - z) h + z c`` with z, c from the input only
  (cached state: one vector per layer);
- ``hybrid``: recurrent and attention layers alternating.

Each op is one the integer runtime (nbmf/runtime) reproduces with int8 weights and activations;
``set_qat(True)`` makes training see that rounding.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from nbmf.models.config import ATTN_LOGIT_UNITS, GATE_UNITS, ModelConfig
from nbmf.models.quant import ActQuant, QLinear, RMSNormQ, fake_quant, fake_quant_weight


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """Per-head ALiBi slopes (nats per token of distance), rounded to the runtime's 1/256 grid."""
    s = torch.tensor([2.0 ** (-8.0 * (i + 1) / n_heads) for i in range(n_heads)])
    return torch.clamp(torch.round(s * ATTN_LOGIT_UNITS), min=1) / ATTN_LOGIT_UNITS


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.d_head = cfg.n_heads, cfg.d_model // cfg.n_heads
        self.qkv = QLinear(cfg.d_model, 3 * cfg.d_model, in_gain=True)
        self.q_quant, self.k_quant, self.v_quant = ActQuant(), ActQuant(), ActQuant()
        self.out = QLinear(cfg.d_model, cfg.d_model)
        self.register_buffer("slopes", alibi_slopes(cfg.n_heads), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=-1)
        q, k, v = self.q_quant(q), self.k_quant(k), self.v_quant(v)
        q, k, v = (t.view(B, T, self.n_heads, self.d_head).transpose(1, 2) for t in (q, k, v))
        pos = torch.arange(T, device=x.device)
        dist = (pos[:, None] - pos[None, :]).clamp_min(0).to(x.dtype)
        bias = -self.slopes.to(x.dtype)[:, None, None] * dist
        causal = pos[None, :] <= pos[:, None]
        bias = bias.masked_fill(~causal, float("-inf"))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        y = y.transpose(1, 2).reshape(B, T, D)
        if self.v_quant.qat and self.v_quant.amax > 0:  # the runtime rounds the mixed values to v's grid
            y = fake_quant(y, self.v_quant.amax / 127)
        return self.out(y)


class CausalConv(nn.Module):
    def __init__(self, cfg: ModelConfig, dilation: int):
        super().__init__()
        self.k, self.dilation = cfg.kernel_size, dilation
        # depthwise taps; tap i looks i*dilation tokens back. No separate gain: the taps absorb it.
        self.taps = nn.Parameter(torch.randn(cfg.kernel_size, cfg.d_model) / math.sqrt(cfg.kernel_size))
        self.qat = False
        self.conv_quant, self.act_quant = ActQuant(), ActQuant()
        self.out = QLinear(cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        taps = fake_quant_weight(self.taps.t()).t() if self.qat else self.taps  # int8 per channel
        y = torch.zeros_like(x)
        for i in range(self.k):
            shift = i * self.dilation
            if shift >= x.shape[1]:
                break
            y[:, shift:] = y[:, shift:] + x[:, : x.shape[1] - shift] * taps[i]
        y = self.act_quant(F.gelu(self.conv_quant(y)))
        return self.out(y)


class MinGRU(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.zc = QLinear(d, 2 * d, in_gain=True)
        self.z_quant, self.c_quant = ActQuant(), ActQuant()
        self.out = QLinear(d, d)
        self.qat = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        zp, c = self.zc(x).chunk(2, dim=-1)
        z = torch.sigmoid(self.z_quant(zp))
        c = self.c_quant(c)
        if self.qat:  # the runtime's gate is an integer in [0, 256]
            z = z + (torch.round(z * GATE_UNITS) / GATE_UNITS - z).detach()
        h = torch.zeros_like(c[:, 0])
        hs = []
        for t in range(x.shape[1]):
            h = torch.lerp(h, c[:, t], z[:, t])
            hs.append(h)
        return self.out(torch.stack(hs, dim=1))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        hidden = cfg.mlp_mult * cfg.d_model
        self.up = QLinear(cfg.d_model, hidden, in_gain=True)
        self.pre_quant, self.act_quant = ActQuant(), ActQuant()
        self.down = QLinear(hidden, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.act_quant(F.gelu(self.pre_quant(self.up(x)))))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        kind = cfg.mixers()[layer]
        self.norm1, self.norm2 = RMSNormQ(), RMSNormQ()
        if kind == "attention":
            self.mixer = Attention(cfg)
        elif kind == "conv":
            self.mixer = CausalConv(cfg, cfg.dilation(layer))
        else:
            self.mixer = MinGRU(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CausalModel(nn.Module):
    """Token ids [B, T] -> next-token logits [B, T, vocab_size]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.input_vocab, cfg.d_model)
        nn.init.normal_(self.embed.weight, std=0.5)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNormQ()
        self.head = QLinear(cfg.d_model, cfg.vocab_size, in_gain=True)
        for name, p in self.named_parameters():
            if name.endswith("out.weight") or name.endswith("down.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layers))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))

    def set_qat(self, on: bool = True) -> "CausalModel":
        """Turn int8 fake quantization on or off everywhere."""
        for m in self.modules():
            if hasattr(m, "qat"):
                m.qat = on
        return self

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
