"""Warm start: a released codec artifact's integer weights back to a float model that trains on (``init_from``).

An artifact stores what the integer runtime needs (nbmf/export.py ``integer_params``), not the float model:
int8 weight rows, and for each product a fixed-point multiplier ``m * 2**-s`` that folds together the input
activation's scale, the row's weight scale and the output activation's scale. This module inverts that:

- a weight row's scale ``s_w`` is solved from its multiplier once the activation scales around it are known;
- activation scales in front of a nonlinearity (GELU, sigmoid) are read off its lookup table (the table was
  tabulated from them); the norm outputs' scale is the fixed ``NORM_SCALE`` and the residual stream's
  ``RESIDUAL_SCALE``;
- a scale between two linear maps (attention q/k, values and the output projection, minGRU's candidate and its
  output) is not determined: scaling one side by c and the other by 1/c gives the same integer model. It is
  chosen so the two sides' float weights have the same mean magnitude (what weight decay drives a net toward).

The float model returned reproduces the artifact: re-exported without training it gives the same int8 weights,
and its QAT forward pass the same probabilities up to the runtime's rounding (tests/train/test_warmstart.py).
Norm gains come back as 1 (the runtime folded them into the next weight, so the folded weight is the weight).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nbmf.models.config import ATTN_LOGIT_UNITS, GATE_UNITS, ModelConfig


@dataclass
class WarmStart:
    """What ``init_from`` hands the training loop: architecture, tokenizer, float state, provenance."""

    cfg: ModelConfig  # the artifact's architecture (its context is its decode window)
    tokenizer_json: str
    state: dict  # float model state dict as numpy arrays (parameters and QAT observers' amax)
    about: dict  # path, version, fingerprint: recorded in the new artifact's manifest
    # the artifact's match model (nbmf.runtime.match), carried into the adapted artifact: its hit table maps (match
    # length, the neural probability of the predicted token) to a hit probability, which adapting the network keeps
    # meaningful; None when the artifact ships none
    match: dict | None = None  # {"json": match.json's text, "about": the manifest's "match" entry}


def _ratio(m: np.ndarray, s: np.ndarray) -> np.ndarray:
    """The real factor ``m * 2**-s`` of a fixed-point multiplier (nbmf.export.multiplier)."""
    return np.asarray(m, np.float64) * np.exp2(-np.asarray(s, np.float64))


_GRID = np.arange(-127, 128, dtype=np.float64)  # the int8 inputs a lookup table is tabulated on


def _gelu(x: np.ndarray) -> np.ndarray:
    import torch

    return torch.nn.functional.gelu(torch.from_numpy(np.asarray(x, np.float64))).numpy()


def _search(candidates: np.ndarray, miss) -> float:
    """The candidate scale with the fewest table mismatches (``miss``: scales [n] -> mismatches [n]), refined once
    on a finer grid around it; ties take the middle of the best run (the table pins the scale to an interval)."""
    for _ in range(2):
        m = miss(candidates)
        best = np.flatnonzero(m == m.min())
        i = int(best[len(best) // 2])
        lo, hi = candidates[max(i - 1, 0)], candidates[min(i + 1, len(candidates) - 1)]
        found, candidates = candidates[i], np.geomspace(lo, hi, 801)
    return float(found)


def fit_gelu_lut(lut: np.ndarray) -> tuple[float, float]:
    """(input scale, output scale) that tabulate ``lut`` = clip(round(gelu(i * s_in) / s_out)), i in [-127, 127].

    For a given s_in every entry bounds s_out to an interval (an unclipped entry: g / s_out within 0.5 of it; a
    clipped one: g / s_out past 126.5; a zero: |g| / s_out under 0.5); s_in is chosen where the intervals meet
    (or miss each other least, in log terms) and s_out is the geometric middle of their intersection."""
    from nbmf.models.quant import QMAX

    lut = np.asarray(lut, np.float64)
    if not ((np.abs(lut) < QMAX) & (lut != 0)).any():
        raise ValueError("a GELU table with no unclipped nonzero entry does not determine its scales")

    def bounds(s_in: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g = _gelu(s_in[:, None] * _GRID[None, :])
        with np.errstate(divide="ignore", invalid="ignore"):
            a, b = g / (lut - 0.5), g / (lut + 0.5)
            lo = np.where(lut == 0, 2 * np.abs(g), np.where(lut >= QMAX, 0.0, np.where(lut <= -QMAX, 0.0,
                                                                                      np.minimum(a, b))))
            hi = np.where(lut == 0, np.inf, np.where(lut >= QMAX, g / (QMAX - 0.5), np.where(
                lut <= -QMAX, g / (0.5 - QMAX), np.maximum(a, b))))
        lo = np.where(np.isnan(lo), np.inf, lo)
        hi = np.where(np.isnan(hi) | (hi <= 0), 0.0, hi)
        return lo.max(axis=1), hi.min(axis=1)

    def miss(s_in: np.ndarray) -> np.ndarray:
        lo, hi = bounds(s_in)
        with np.errstate(divide="ignore"):
            return np.maximum(0.0, np.log(np.maximum(lo, 1e-300)) - np.log(np.maximum(hi, 1e-300)))

    s_in = _search(np.geomspace(1e-4, 10.0, 4001), miss)
    lo, hi = bounds(np.array([s_in]))
    return s_in, float(np.sqrt(lo[0] * hi[0]) if lo[0] <= hi[0] else (lo[0] + hi[0]) / 2)


def fit_sigmoid_lut(lut: np.ndarray) -> float:
    """Input scale that tabulates ``lut`` = round(sigmoid(i * s) * GATE_UNITS), i in [-127, 127]."""
    lut = np.asarray(lut, np.float64)

    def miss(s: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):  # exp overflows to inf far out on the grid: the gate is 0 there, rightly
            z = np.round(GATE_UNITS / (1.0 + np.exp(-s[:, None] * _GRID[None, :])))
        return np.abs(z - lut[None, :]).sum(axis=1)

    return _search(np.geomspace(1e-4, 10.0, 4001), miss)


def _rows(w_int: np.ndarray, s_w: np.ndarray) -> np.ndarray:
    return (np.asarray(w_int, np.float64) * s_w[:, None]).astype(np.float32)


def _balance(ratio_a: np.ndarray, w_a: np.ndarray, ratio_b: np.ndarray, w_b: np.ndarray) -> float:
    """sqrt(mean |b rows| / mean |a rows|) with each row's int8 weights weighted by its multiplier ratio."""
    a = float(np.mean(ratio_a[:, None] * np.abs(w_a)))
    b = float(np.mean(ratio_b[:, None] * np.abs(w_b)))
    return math.sqrt(max(b, 1e-30) / max(a, 1e-30))


def float_state(cfg: ModelConfig, p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The float ``CausalModel`` state (``build_model(cfg).state_dict()`` keys) of integer params ``p``."""
    from nbmf.export import HEAD_UNITS, RESIDUAL_SCALE
    from nbmf.models.quant import NORM_SCALE, QMAX

    d = cfg.d_model
    out: dict[str, np.ndarray] = {"embed.weight": (np.asarray(p["emb"], np.float64) * RESIDUAL_SCALE)
                                  .astype(np.float32)}
    ones = np.ones(d, np.float32)

    def linear(name: str, w_int, s_w, gain: bool):
        out[f"{name}.weight"] = _rows(w_int, s_w)
        if gain:
            out[f"{name}.in_gain"] = ones.copy()

    def amax(name: str, scale: float):
        out[f"{name}.amax"] = np.array(scale * QMAX, np.float32)

    for layer, kind in enumerate(cfg.mixers()):
        i = int(p["mixer_idx"][layer])
        pre = f"blocks.{layer}.mixer"
        r_o, w_o = _ratio(p["wo_m"][layer], p["wo_s"][layer]), p["wo"][layer]
        if kind == "attention":
            r = _ratio(p["qkv_m"][i], p["qkv_s"][i])  # NORM * s_w / s_{q,k,v} per row
            w = p["qkv"][i]
            (rq, rk, rv), (wq, wk, wv) = np.split(r, 3), np.split(w, 3)
            prod = float(_ratio(p["score_m"][i], p["score_s"][i])) * math.sqrt(d // cfg.n_heads) / ATTN_LOGIT_UNITS
            s_q = math.sqrt(prod) * _balance(rq, wq, rk, wk)  # s_q * s_k = prod; |W_q| = |W_k|
            s_k = prod / s_q
            # |W_v| ~ s_v * rv / NORM, |W_o| ~ r_o * RES / s_v: equal when s_v**2 = (r_o RES NORM) / rv
            s_v = math.sqrt(RESIDUAL_SCALE * NORM_SCALE) * _balance(rv, wv, r_o, w_o)
            s_w = np.concatenate([rq * s_q, rk * s_k, rv * s_v]) / NORM_SCALE
            linear(f"{pre}.qkv", w, s_w, True)
            amax(f"{pre}.q_quant", s_q)
            amax(f"{pre}.k_quant", s_k)
            amax(f"{pre}.v_quant", s_v)
            s_y = s_v
        elif kind == "conv":
            s_c, s_a = fit_gelu_lut(p["conv_lut"][i])
            s_t = _ratio(p["taps_m"][i], p["taps_s"][i]) * s_c / NORM_SCALE  # per channel
            out[f"{pre}.taps"] = (np.asarray(p["taps"][i], np.float64) * s_t[None, :]).astype(np.float32)
            amax(f"{pre}.conv_quant", s_c)
            amax(f"{pre}.act_quant", s_a)
            s_y = s_a
        else:
            s_z = fit_sigmoid_lut(p["sig_lut"][i])
            r = _ratio(p["zc_m"][i], p["zc_s"][i])
            (rz, rc), wc = np.split(r, 2), np.split(p["zc"][i], 2)[1]
            s_c = math.sqrt(RESIDUAL_SCALE * NORM_SCALE) * _balance(rc, wc, r_o, w_o)
            linear(f"{pre}.zc", p["zc"][i], np.concatenate([rz * s_z, rc * s_c]) / NORM_SCALE, True)
            amax(f"{pre}.z_quant", s_z)
            amax(f"{pre}.c_quant", s_c)
            s_y = s_c
        linear(f"{pre}.out", w_o, r_o * RESIDUAL_SCALE / s_y, False)
        s_pre, s_act = fit_gelu_lut(p["act_lut"][layer])
        mlp = f"blocks.{layer}.mlp"
        linear(f"{mlp}.up", p["w1"][layer], _ratio(p["w1_m"][layer], p["w1_s"][layer]) * s_pre / NORM_SCALE, True)
        linear(f"{mlp}.down", p["w2"][layer], _ratio(p["w2_m"][layer], p["w2_s"][layer]) * RESIDUAL_SCALE / s_act,
               False)
        amax(f"{mlp}.pre_quant", s_pre)
        amax(f"{mlp}.act_quant", s_act)
    linear("head", p["wh"], _ratio(p["wh_m"], p["wh_s"]) / (NORM_SCALE * HEAD_UNITS), True)
    return out


def load_warm_start(artifact_dir) -> WarmStart:
    """Read and verify a released artifact (nbmf.artifact.load_artifact) and invert its weights to float."""
    from nbmf.artifact import MATCH, MAX_MATCH_BYTES, fingerprint, load_artifact, read_listed

    path = Path(artifact_dir).expanduser().resolve()
    manifest, cfg, int_model, tokenizer = load_artifact(path)
    state = float_state(cfg, int_model.params)
    about = {"path": str(path), "version": manifest["version"], "fingerprint": "sha256:" + fingerprint(manifest).hex(),
             "training_data": manifest.get("training_data", "")}
    data = read_listed(path, manifest, MATCH, MAX_MATCH_BYTES)  # the hashed bytes, None without a match model
    match = None if data is None else {"json": data.decode("utf-8"), "about": manifest.get("match", {})}
    return WarmStart(cfg, tokenizer.to_json(), state, about, match)


def load_into(model, state: dict) -> None:
    """Load a ``WarmStart.state`` into a freshly built model of the same architecture (every key must match)."""
    import torch

    model.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in state.items()}, strict=True)
