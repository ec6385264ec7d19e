"""Blobs a hostile client could send: checksum-valid headers that lie, stored JSON that no encoder writes."""
from __future__ import annotations

import zlib

from nbmf import blob as nbmf_blob


def forged(original_length: int, body: bytes = b"\x00", kind=nbmf_blob.Kind.TEXT) -> bytes:
    """A checksum-valid stub blob that claims ``original_length`` bytes of output (its body cannot give them)."""
    return nbmf_blob.pack(encoder_id=0, fidelity=nbmf_blob.Fidelity.LOSSLESS, kind=kind,
                          original_length=original_length, body=body)


def stub_json_blob(raw: bytes) -> bytes:
    """A stub blob whose stored JSON text is ``raw`` exactly (deep nesting, huge integers, NaN, ...)."""
    return forged(len(raw), zlib.compress(raw), nbmf_blob.Kind.JSON)


def hostile_legacy(raw: bytes, sig: str = "0" * 64) -> dict:
    """A legacy lossless blob whose stored JSON text is ``raw`` (not something the old stub could write)."""
    return {"meta": {"fidelity": "lossless", "type": "json"}, "code": zlib.compress(raw).hex(), "sig": sig}
