"""Per-record measurements -> the summary numbers and gates of issue 3.

ratio = raw bytes / stored bytes (whole blob, header included); aggregate ratio = total raw /
total stored; bits per byte = 8 * total stored / total raw. Percentiles use numpy's linear
interpolation. Latencies are per record, in process, single thread, in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Measurements:
    """Column arrays over the records of one codec x fidelity run (appended record by record)."""

    raw_bytes: list[int]
    stored_bytes: list[int]
    types: list[str]
    exact: list[bool]  # lossless: output == raw; semantic: output == expected canonical form
    similarity: list[float]  # 1 - normalized Levenshtein(original text, output text); semantic only
    encode_s: list[float]
    decode_s: list[float]

    @classmethod
    def empty(cls) -> "Measurements":
        return cls([], [], [], [], [], [], [])

    def add(self, raw: int, stored: int, rtype: str, exact: bool, similarity: float | None,
            enc_s: float, dec_s: float) -> None:
        self.raw_bytes.append(raw)
        self.stored_bytes.append(stored)
        self.types.append(rtype)
        self.exact.append(exact)
        if similarity is not None:
            self.similarity.append(similarity)
        self.encode_s.append(enc_s)
        self.decode_s.append(dec_s)

    def select(self, rtype: str | None) -> "Measurements":
        if rtype is None:
            return self
        idx = [i for i, t in enumerate(self.types) if t == rtype]
        pick = lambda xs: [xs[i] for i in idx] if len(xs) == len(self.types) else []  # noqa: E731
        return Measurements(pick(self.raw_bytes), pick(self.stored_bytes), pick(self.types),
                            pick(self.exact), pick(self.similarity), pick(self.encode_s), pick(self.decode_s))


def percentile(xs, q: float) -> float:
    """The q-th percentile (numpy's linear interpolation); nan for no values. Every NBMF figure uses this one.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
    2.5
    """
    x = np.asarray(xs, dtype=np.float64)
    return float(np.percentile(x, q)) if x.size else float("nan")


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated (latency, ratio) points (lower latency, higher ratio), by increasing latency.

    >>> pareto_front([(1.0, 2.0), (2.0, 3.0), (3.0, 2.5), (0.5, 1.0)])
    [3, 0, 1]
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def summarize(m: Measurements) -> dict:
    """The issue's metric set for one group of records."""
    n = len(m.raw_bytes)
    if n == 0:
        return {"n": 0}
    raw = np.asarray(m.raw_bytes, dtype=np.float64)
    stored = np.asarray(m.stored_bytes, dtype=np.float64)
    # An empty record stored in k bytes has ratio 0 (nothing saved), never a division error.
    ratios = np.divide(raw, stored, out=np.zeros_like(raw), where=stored > 0)
    enc = np.asarray(m.encode_s) * 1e3
    dec = np.asarray(m.decode_s) * 1e3
    out = {
        "n": n,
        "raw_bytes": int(raw.sum()),
        "stored_bytes": int(stored.sum()),
        "ratio": float(raw.sum() / stored.sum()) if stored.sum() else float("nan"),
        "bits_per_byte": float(8 * stored.sum() / raw.sum()) if raw.sum() else float("nan"),
        "ratio_mean": float(ratios.mean()),
        "ratio_p5": percentile(ratios, 5),
        "ratio_p50": percentile(ratios, 50),
        "ratio_min": float(ratios.min()),
        "frac_ratio_ge_2": float((ratios >= 2.0).mean()),
        "exact_rate": float(np.mean(m.exact)),
        **{f"{op}_ms_p{q}": percentile(x, q) for op, x in (("encode", enc), ("decode", dec)) for q in (50, 95, 99)},
        "encode_mb_s": float(raw.sum() / 1e6 / (enc.sum() / 1e3)) if enc.sum() else float("inf"),
        "decode_mb_s": float(raw.sum() / 1e6 / (dec.sum() / 1e3)) if dec.sum() else float("inf"),
    }
    if m.similarity:
        sim = np.asarray(m.similarity)
        out.update(similarity_mean=float(sim.mean()), similarity_p5=percentile(sim, 5),
                   similarity_min=float(sim.min()))
    return out


@dataclass(frozen=True)
class Gate:
    name: str
    metric: str
    op: str  # ">=" or "<"
    threshold: float
    fidelity: str  # lossless | semantic | both

    def check(self, summary: dict) -> dict:
        value = summary.get(self.metric)
        if value is None or value != value:  # missing or NaN
            passed = False
        else:
            passed = value >= self.threshold if self.op == ">=" else value < self.threshold
        return {"gate": self.name, "metric": self.metric, "value": value, "op": self.op,
                "threshold": self.threshold, "passed": bool(passed)}


# The seed's gates. "mean ratio" is the per-record mean; the aggregate ratio is reported beside it.
GATES = (
    Gate("mean ratio >= 2x", "ratio_mean", ">=", 2.0, "both"),
    Gate("95% of records >= 2x (p5)", "ratio_p5", ">=", 2.0, "both"),
    Gate("no record < 1.5x", "ratio_min", ">=", 1.5, "both"),
    Gate("lossless exact 100%", "exact_rate", ">=", 1.0, "lossless"),
    Gate("semantic similarity mean >= 99.5%", "similarity_mean", ">=", 0.995, "semantic"),
    Gate("semantic similarity p5 >= 99.0%", "similarity_p5", ">=", 0.990, "semantic"),
    Gate("semantic similarity min >= 98.0%", "similarity_min", ">=", 0.980, "semantic"),
    Gate("encode p95 < 120 ms", "encode_ms_p95", "<", 120.0, "both"),
    Gate("decode p95 < 120 ms", "decode_ms_p95", "<", 120.0, "both"),
)


def check_gates(summary: dict, fidelity: str) -> list[dict]:
    return [g.check(summary) for g in GATES if g.fidelity in ("both", fidelity)]
