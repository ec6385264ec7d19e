"""Deterministic train/val/test assignment by group key.

A record's split depends only on (seed, group): every record of one dialogue, document or package
lands in the same split, on every run and every machine, whatever the input order.

>>> s = Splitter(seed=0, fractions=(0.8, 0.1, 0.1))
>>> s.assign("dialogue-17") == s.assign("dialogue-17")
True
>>> s.assign("dialogue-17") in SPLITS
True
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Splitter:
    seed: int = 0
    fractions: tuple[float, float, float] = (0.9, 0.05, 0.05)  # train, val, test; sum to 1

    def __post_init__(self):
        f = tuple(float(x) for x in self.fractions)
        if len(f) != 3 or any(x < 0 for x in f) or abs(sum(f) - 1.0) > 1e-9:
            raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {self.fractions}")
        object.__setattr__(self, "fractions", f)

    def unit(self, group: str) -> float:
        """Uniform number in [0, 1) from sha256(seed, group): stable across Python versions
        (unlike hash()) and independent of every other group."""
        h = hashlib.sha256(f"{self.seed}\x00{group}".encode("utf-8", "surrogatepass")).digest()
        return int.from_bytes(h[:8], "big") / 2.0**64

    def assign(self, group: str) -> str:
        u = self.unit(group)
        train, val, _ = self.fractions
        if u < train:
            return "train"
        if u < train + val:
            return "val"
        return "test"


def parse_fractions(text: str) -> tuple[float, float, float]:
    """"0.9,0.05,0.05" -> (0.9, 0.05, 0.05), for the CLI."""
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"--fractions wants three comma-separated numbers (train,val,test), got {text!r}") from None
    if len(parts) != 3:
        raise ValueError(f"--fractions wants three numbers (train,val,test), got {text!r}")
    Splitter(fractions=parts)  # validates
    return parts
