"""Model configuration and the token sequence a record becomes (torch-free: the runtime uses it too)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FAMILIES = ("transformer", "cnn", "recurrent", "hybrid")
ATTN_LOGIT_UNITS = 256  # attention scores are integers in 1/256 nat; ALiBi slopes are rounded to that grid
GATE_UNITS = 256  # minGRU gate z is an integer in [0, 256]


@dataclass(frozen=True)
class ModelConfig:
    family: str = "transformer"  # transformer | cnn | recurrent | hybrid
    vocab_size: int = 2048  # output alphabet: the tokenizer's vocabulary
    n_special: int = 6  # conditioning tokens (kind x fidelity) that start every sequence
    d_model: int = 128  # latent size: width of the residual stream
    n_layers: int = 2
    n_heads: int = 4  # attention heads (transformer / hybrid)
    mlp_mult: int = 4  # MLP hidden = mlp_mult * d_model
    kernel_size: int = 4  # cnn: taps per layer; dilation grows as kernel_size ** layer
    context: int = 256  # tokens: training window and the attention window at decode time

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if self.d_model % self.n_heads:
            raise ValueError("d_model must be a multiple of n_heads")

    @property
    def input_vocab(self) -> int:
        return self.vocab_size + self.n_special

    def mixers(self) -> list[str]:
        if self.family == "transformer":
            return ["attention"] * self.n_layers
        if self.family == "cnn":
            return ["conv"] * self.n_layers
        if self.family == "recurrent":
            return ["recurrent"] * self.n_layers
        return ["recurrent" if i % 2 == 0 else "attention" for i in range(self.n_layers)]

    def dilation(self, layer: int) -> int:
        return self.kernel_size ** sum(1 for m in self.mixers()[:layer] if m == "conv")

    def special_token(self, kind: int, fidelity: int) -> int:
        """The conditioning token that starts a record of this kind (0-2) and fidelity (0-1)."""
        return self.vocab_size + (int(kind) * 2 + int(fidelity)) % self.n_special


def sequence_for(ids: np.ndarray, kind: int, fidelity: int, cfg: ModelConfig) -> np.ndarray:
    """Model input for a record: its conditioning token, then its token ids (int64)."""
    out = np.empty(len(ids) + 1, dtype=np.int64)
    out[0] = cfg.special_token(kind, fidelity)
    out[1:] = ids
    return out
