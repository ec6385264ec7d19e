"""Token batches for training: whole records, bucketed by length, never packed across records.

At decode time a record starts from its conditioning token with nothing before it, so training never
lets one record see another: records of similar length share a batch (little padding), records longer
than the window are cut into windows (later windows start mid-record, as a sliding window does).
numpy only, so Ray Data workers and the training loop share it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nbmf.blob import Fidelity, Kind
from nbmf.models.config import ModelConfig, sequence_for
from nbmf.record import from_corpus

PAD = -1  # target id of padding: ignored by the loss

LOSSLESS, SEMANTIC = Fidelity.LOSSLESS, Fidelity.SEMANTIC


def corpus_raw(record: dict) -> tuple[bytes, Kind]:
    """(raw bytes, kind) of a corpus object: ``nbmf.record.from_corpus``'s, nothing of its own.

    Kept under this name for scripts that also run against older checkouts (bench/runtime_speed.py);
    new code uses ``nbmf.record.from_corpus`` or ``nbmf.data.corpus.iter_records``.
    """
    r = from_corpus(record)
    return r.raw, r.kind


@dataclass(frozen=True)
class Window:
    tokens: np.ndarray  # int64 [L]: model input = tokens[:-1], targets = tokens[1:]


def windows_of(seq: np.ndarray, context: int) -> list[np.ndarray]:
    """Cut a record's sequence (conditioning token + ids) into windows of at most context+1 tokens."""
    out, start = [], 0
    while start < len(seq) - 1:
        out.append(seq[start : start + context + 1])
        start += context
    return out


def record_windows(ids: np.ndarray, kind: int, fidelity: int, cfg: ModelConfig) -> list[np.ndarray]:
    return windows_of(sequence_for(ids, kind, fidelity, cfg), cfg.context)


def make_batches(windows: list[np.ndarray], tokens_per_batch: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Group windows of similar length into [B, L] int64 arrays padded with PAD, in random order."""
    order = np.argsort([len(w) for w in windows], kind="stable")
    batches, cur, cur_len = [], [], 0
    for i in order:
        w = windows[i]
        width = max(cur_len, len(w))
        if cur and width * (len(cur) + 1) > tokens_per_batch:
            batches.append(_pad(cur))
            cur, width = [], len(w)
        cur.append(w)
        cur_len = width
    if cur:
        batches.append(_pad(cur))
    rng.shuffle(batches)
    return batches


def _pad(ws: list[np.ndarray]) -> np.ndarray:
    out = np.full((len(ws), max(len(w) for w in ws)), PAD, dtype=np.int64)
    for r, w in enumerate(ws):
        out[r, : len(w)] = w
    return out
