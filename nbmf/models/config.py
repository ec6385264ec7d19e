"""Model configuration and the token sequence a record becomes (torch-free: the runtime uses it too)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FAMILIES = ("transformer", "cnn", "recurrent", "hybrid")
ATTN_LOGIT_UNITS = 256  # attention scores are integers in 1/256 nat; ALiBi slopes are rounded to that grid
GATE_UNITS = 256  # minGRU gate z is an integer in [0, 256]
# Inclusive bounds that refuse nonsense before it allocates: each is far above any trained model (v1: vocab 2,048,
# d 128, 2 layers, context 128) and far below what would need gigabytes per record. The integer runtime adds
# the bounds its kernels' exactness proofs need (nbmf.runtime.intmodel.check_config).
LIMITS = {
    "vocab_size": (256, 1 << 17),  # byte-level: all 256 bytes are ids; the head's scratch is rows x vocab int32
    "n_special": (1, 64),  # conditioning tokens (6 are used: kind x fidelity)
    "d_model": (1, 4096),
    "n_layers": (1, 64),
    "n_heads": (1, 4096),
    "mlp_mult": (1, 64),
    "kernel_size": (1, 64),
    "context": (1, 1 << 16),  # tokens
}
MAX_HIDDEN = 16384  # mlp_mult * d_model: the widest input of an int8 product (nbmf/runtime/gemm.py: K <= 16,384)
MAX_DILATION = 1 << 16  # tokens: a cnn's history (kernel_size - 1) * dilation is cached per record


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
        """Refuse a configuration no model can have, listing every problem (one ValueError): the manifest of an
        artifact is untrusted input, and sizes are checked before anything is allocated from them."""
        problems = []
        if not isinstance(self.family, str) or self.family not in FAMILIES:
            problems.append(f"family must be one of {FAMILIES}, got {self.family!r}")
        for name, (lo, hi) in LIMITS.items():
            v = getattr(self, name)
            if type(v) is not int:  # bool is an int, and 128.0 works in arithmetic but not as a shape
                problems.append(f"{name} must be an integer, got {v!r}")
            elif not lo <= v <= hi:
                problems.append(f"{name} must lie in [{lo}, {hi}], got {v}")
        if not problems:
            if self.d_model % self.n_heads:
                problems.append(f"d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads})")
            if self.mlp_mult * self.d_model > MAX_HIDDEN:
                problems.append(f"mlp_mult * d_model must be at most {MAX_HIDDEN}, got {self.mlp_mult * self.d_model}")
            n_conv = self.mixers().count("conv")
            if n_conv and self.kernel_size ** (n_conv - 1) > MAX_DILATION:  # the last conv layer's dilation
                problems.append(f"kernel_size ** (conv layers - 1) = {self.kernel_size} ** {n_conv - 1} exceeds "
                                f"the largest dilation, {MAX_DILATION}")
        if problems:
            raise ValueError("invalid model configuration: " + "; ".join(problems))

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
