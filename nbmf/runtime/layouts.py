"""Body layouts: how a record's range-coder words (nbmf.runtime.coder) become the bytes a blob stores.

numpy only, so a manifest's layout is checked (nbmf.artifact) without loading numba or the model.
"""
from __future__ import annotations

import numpy as np

# 1 (versions v1-v4): the words little endian, constriction's seal. 2 (v5 on): the words big endian, the shortest
# seal (``coder.encoder_finish``). Both drop the trailing zero bytes, which the decoder reads back as zeros; in
# layout 2 those are the low-order bytes of the seal, so a seal costs the bits that pin the final interval rounded
# up to bytes (at most 64 - log2(range) + 1 bits; 2.3 bytes on average on val) instead of 4. The manifest names the
# layout (its "body"; absent: 1), and the fingerprint covers it (nbmf.artifact).
BODY_LAYOUTS = (1, 2)
BODY_LAYOUT = 2  # what new versions are written with
_WORD_ORDER = {1: "<u4", 2: ">u4"}


def shortest_seal(layout: int) -> bool:
    """Whether ``encoder_finish`` seals a body of this layout with the shortest seal."""
    return layout >= 2


def words_of_body(body: bytes, layout: int) -> np.ndarray:
    """A body's 32-bit words (the trailing zero bytes it dropped come back)."""
    pad = -len(body) % 4
    return np.frombuffer(bytes(body) + b"\0" * pad, dtype=_WORD_ORDER[layout]).astype(np.uint32)


def body_of_words(words: np.ndarray, layout: int) -> bytes:
    """The coder's words as a body: trailing zero bytes dropped (the decoder reads them as 0)."""
    return words.astype(_WORD_ORDER[layout]).tobytes().rstrip(b"\0")
