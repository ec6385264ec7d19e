"""The integer model: its parameter arrays, per-record state, and batched stepping.

Parameters are a flat dict of integer numpy arrays (stored in the artifact as safetensors), named as
the kernel's arguments. ``IntModel.step`` advances any subset of a batch's records by one token, so
records of different lengths decode in lockstep and batch shape never changes a result.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nbmf.models.config import ModelConfig
from nbmf.runtime import kernels

PARAMS = (
    "emb", "norm_k", "mixer_type", "mixer_idx",
    "wo", "wo_m", "wo_s", "w1", "w1_m", "w1_s", "act_lut", "w2", "w2_m", "w2_s",
    "qkv", "qkv_m", "qkv_s", "score_m", "score_s", "slopes", "attn_lut",
    "taps", "taps_m", "taps_s", "dilation", "conv_lut",
    "zc", "zc_m", "zc_s", "sig_lut",
    "wh", "wh_m", "wh_s", "head_lut",
)
# int8 in the artifact, int16 in memory (the kernels' SIMD loops multiply int16 x int16 -> int32)
WEIGHTS = ("wo", "w1", "w2", "qkv", "taps", "zc", "wh")


@dataclass
class State:
    """Caches of a batch of records (slot-indexed), updated in place by ``IntModel.step``."""

    kcache: np.ndarray  # int16 [n_attention_layers, batch, d, window] (ring buffer over positions)
    vcache: np.ndarray
    rstate: np.ndarray  # int64 [n_recurrent_layers, batch, d]
    chist: np.ndarray  # int16 [n_conv_layers, batch, history, d]
    pos: np.ndarray  # int64 [batch]: tokens seen per record

    def reset(self, slot: int) -> None:
        self.kcache[:, slot] = 0
        self.vcache[:, slot] = 0
        self.rstate[:, slot] = 0
        self.chist[:, slot] = 0
        self.pos[slot] = 0


class IntModel:
    def __init__(self, cfg: ModelConfig, params: dict[str, np.ndarray]):
        missing = [k for k in PARAMS if k not in params]
        if missing:
            raise ValueError(f"integer model lacks parameters {missing}")
        self.cfg = cfg
        self.params = {k: np.array(params[k], order="C") for k in PARAMS}  # (ascontiguousarray would make 0-d arrays 1-d)
        for k in WEIGHTS:
            self.params[k] = self.params[k].astype(np.int16)
        self.params["emb"] = self.params["emb"].astype(np.int64)
        # 0-d arrays (norm_k) go to the kernel as scalars
        self._args = tuple(int(v.item()) if v.ndim == 0 else v for v in (self.params[k] for k in PARAMS))
        mixers = cfg.mixers()
        self.n_attn = mixers.count("attention")
        self.n_conv = mixers.count("conv")
        self.n_rec = mixers.count("recurrent")
        self.history = 1 + (cfg.kernel_size - 1) * max([cfg.dilation(i) for i, m in enumerate(mixers) if m == "conv"] or [1])

    def storable(self) -> dict[str, np.ndarray]:
        """Arrays as stored: weights back to int8."""
        out = {k: (v.astype(np.int8) if k in WEIGHTS else v) for k, v in self.params.items()}
        if np.abs(out["emb"]).max(initial=0) < 2**31:  # the residual-unit embedding fits int32: half the bytes
            out["emb"] = out["emb"].astype(np.int32)
        return out

    def new_state(self, batch: int) -> State:
        d, w = self.cfg.d_model, self.cfg.context
        return State(
            kcache=np.zeros((self.n_attn, batch, d, w), np.int16),
            vcache=np.zeros((self.n_attn, batch, d, w), np.int16),
            rstate=np.zeros((self.n_rec, batch, d), np.int64),
            chist=np.zeros((self.n_conv, batch, self.history, d), np.int16),
            pos=np.zeros(batch, np.int64),
        )

    def step(self, state: State, tokens: np.ndarray, slots: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Feed ``tokens[j]`` to record ``slots[j]``; return next-token frequencies [len(tokens), vocab].

        float64 holding exact integers in [1, 2**20]: the form the range coder takes, with no copy.
        """
        tokens = np.ascontiguousarray(tokens, dtype=np.int64)
        slots = np.ascontiguousarray(slots, dtype=np.int64)
        if out is None:
            out = np.empty((len(tokens), self.cfg.vocab_size), np.float64)
        kernels.step(tokens, slots, *self._args, state.kcache, state.vcache, state.rstate, state.chist, state.pos, out)
        return out

    def frequencies(self, sequence: np.ndarray) -> np.ndarray:
        """Frequencies after each prefix of one record's input sequence: [len(sequence), vocab]."""
        # one kernel call: tokens for the same slot are consumed in order, exactly as step by step
        return self.step(self.new_state(1), sequence, np.zeros(len(sequence), np.int64))
