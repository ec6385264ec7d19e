"""Payloads <-> raw bytes, and the canonical (semantic-fidelity) form.

Raw bytes are what is measured and coded: UTF-8 of a text, ``json.dumps(obj, ensure_ascii=False)`` of a JSON
value, the bytes themselves otherwise. 'surrogatepass' keeps lone surrogates lossless.

>>> to_raw({"a": [1, "é"]})
(b'{"a": [1, "\\xc3\\xa9"]}', <Kind.JSON: 1>)
>>> from_raw(*to_raw("héllo")) == "héllo"
True
>>> canonical(b"  Hello \\n  world ", Kind.TEXT)
b'Hello world'
"""
from __future__ import annotations

import json
import unicodedata

from nbmf.blob import Kind
from nbmf.errors import CorruptBlobError


def infer_kind(payload) -> Kind:
    if isinstance(payload, str):
        return Kind.TEXT
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return Kind.BYTES
    return Kind.JSON


def to_raw(payload, kind: Kind | str | None = None) -> tuple[bytes, Kind]:
    """(raw bytes, kind) of a payload; ``kind`` None infers it from the Python type."""
    kind = infer_kind(payload) if kind is None else Kind.of(kind)
    if kind == Kind.TEXT:
        if not isinstance(payload, str):
            raise TypeError(f"a text payload is a str, not {type(payload).__name__}")
        return payload.encode("utf-8", "surrogatepass"), kind
    if kind == Kind.BYTES:
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise TypeError(f"a bytes payload is bytes, not {type(payload).__name__}")
        return bytes(payload), kind
    try:
        text = json.dumps(payload, ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise TypeError(f"payload is not JSON-serializable: {e}") from None
    return text.encode("utf-8", "surrogatepass"), kind


def from_raw(raw: bytes, kind: Kind):
    """The payload whose raw bytes are ``raw``; undecodable bytes mean a damaged or mislabelled blob."""
    kind = Kind.of(kind)
    if kind == Kind.BYTES:
        return bytes(raw)
    try:
        text = bytes(raw).decode("utf-8", "surrogatepass")
        return text if kind == Kind.TEXT else json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptBlobError(f"decoded bytes are not valid {kind.label} ({e}): the blob is damaged") from None


def canonical(raw: bytes | str, kind: Kind | str) -> bytes:
    """Semantic form: text -> NFC with whitespace runs collapsed; JSON -> compact, sorted keys; bytes unchanged.

    ``raw`` is the raw bytes (a str is taken as its UTF-8); ``kind`` a Kind or its name.
    """
    kind = Kind.of(kind)
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if kind == Kind.BYTES:
        return bytes(raw)
    text = bytes(raw).decode("utf-8", "surrogatepass")
    if kind == Kind.TEXT:
        return " ".join(unicodedata.normalize("NFC", text).split()).encode("utf-8", "surrogatepass")
    obj = json.loads(text)
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8", "surrogatepass")
