"""What a user would pick instead of NBMF: the codecs every bench row is compared against.

Each bench codec turns a record's raw bytes into the bytes that would be stored and back (``kind``
is the record's ``nbmf.blob.Kind``):
  prepare(raw, kind) -> input   (untimed: what the caller already holds)
  encode(input, fidelity) -> stored bytes   (timed)
  decode(stored, fidelity) -> output        (timed)
  output_bytes(output, kind) -> bytes       (untimed: for the exact-match check)
Classical codecs compress bytes; in semantic mode they compress the canonical form (a fair
lossy baseline). The legacy stub writes the old service's dict blob and reads it back through
nbmf's own legacy decoder.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections import Counter

from nbmf.codecs import fallback
from nbmf.extras import require


def _canonical(raw: bytes, kind) -> bytes:
    from nbmf.payload import canonical

    return canonical(raw, kind)


class ClassicalCodec:
    """Base for byte codecs: no header, the stored size is the compressed frame alone."""

    name = "?"
    fidelities = ("lossless", "semantic")
    extra_bytes = 0  # shared state a decoder must hold (dictionary), reported separately

    def __init__(self):
        self.stats = Counter()

    def prepare(self, raw: bytes, kind):
        return raw, kind

    def encode(self, item, fidelity: str) -> bytes:
        raw, kind = item
        return self.compress(_canonical(raw, kind) if fidelity == "semantic" else raw)

    def decode(self, stored: bytes, fidelity: str) -> bytes:
        return self.decompress(stored)

    def output_bytes(self, out: bytes, kind) -> bytes:
        return out

    def compress(self, data: bytes) -> bytes:
        raise NotImplementedError

    def decompress(self, data: bytes) -> bytes:
        raise NotImplementedError


class Zlib(ClassicalCodec):
    def __init__(self, level: int = 9):
        super().__init__()
        self.level, self.name = level, f"zlib-{level}"

    def compress(self, data):
        return zlib.compress(data, self.level)

    def decompress(self, data):
        return zlib.decompress(data)


class Brotli(ClassicalCodec):
    def __init__(self, quality: int = 11):
        super().__init__()
        self.quality, self.name = quality, f"brotli-{quality}"

    def compress(self, data):
        return require("brotli").compress(data, quality=self.quality)

    def decompress(self, data):
        return require("brotli").decompress(data)


class Zstd(ClassicalCodec):
    """Standard zstd frames as nbmf.codecs.fallback.compressor writes them (no checksum, content size or dictionary
    id), without the blob around them. A neural version's fallback body is the same frame less its 4-byte magic
    number; the anchor keeps it, as any zstd user would store the frame."""

    def __init__(self, level: int = fallback.LEVEL, dictionary: bytes | None = None):
        super().__init__()
        self.level = level
        self.name = f"zstd-{level}" + ("-dict" if dictionary else "")
        self.extra_bytes = len(dictionary) if dictionary else 0
        self._c = fallback.compressor(dictionary, level)
        self._d = fallback.decompressor(dictionary)

    def compress(self, data):
        return self._c.compress(data)

    def decompress(self, data):
        # No content size in the frame: a streaming decompressor sizes the output itself.
        return self._d.decompressobj().decompress(data)


# -- legacy stub -------------------------------------------------------------------------------

LEGACY_PREVIEW_CHARS = 2048


def legacy_canonical(payload) -> str:
    """The OLD stub's canonical form (not nbmf.payload.canonical: no NFC, default separators)."""
    if isinstance(payload, str):
        return " ".join(payload.split())
    return json.dumps(payload, ensure_ascii=False, sort_keys=True)


def legacy_blob(payload, fidelity: str = "lossless") -> dict:
    """The dict the old stub encoder wrote (issue 2, item 3), field for field."""
    sig = hashlib.sha256(
        json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogatepass")
        if fidelity == "lossless" else legacy_canonical(payload).encode("utf-8", "surrogatepass")
    ).hexdigest()
    ptype = "text" if isinstance(payload, str) else "json"
    if fidelity == "lossless":
        js = json.dumps(payload, ensure_ascii=False).encode("utf-8", "surrogatepass")
        meta = {"fidelity": "lossless", "type": ptype, "length_bytes": len(js)}
        return {"meta": meta, "code": zlib.compress(js, 9).hex(), "sig": sig}
    canon = legacy_canonical(payload)
    preview = canon[:LEGACY_PREVIEW_CHARS]
    meta = {"fidelity": "semantic", "type": ptype, "preview_length": len(preview),
            "length_bytes": len(canon.encode("utf-8", "surrogatepass"))}
    return {"meta": meta, "code": preview.encode("utf-8", "surrogatepass").hex(), "sig": sig}


class LegacyStub:
    """The old stub as it stored blobs: its dict serialized with json.dumps (stored size = that
    JSON text's length), read back through `Registry.decode_result` (nbmf's legacy path)."""

    name = "legacy"
    fidelities = ("lossless", "semantic")
    extra_bytes = 0

    def __init__(self, registry):
        self.registry = registry
        self.stats = Counter()

    def prepare(self, raw: bytes, kind):
        from nbmf.payload import from_raw

        return from_raw(raw, kind)

    def encode(self, payload, fidelity: str) -> bytes:
        return json.dumps(legacy_blob(payload, fidelity)).encode()

    def decode(self, stored: bytes, fidelity: str):
        return self.registry.decode_result(stored)

    def output_bytes(self, res, kind) -> bytes:
        from nbmf.blob import Fidelity

        if res.fidelity == Fidelity.SEMANTIC:
            p = res.payload
            return (p if isinstance(p, str) else legacy_canonical(p)).encode("utf-8", "surrogatepass")
        from nbmf.payload import to_raw

        return to_raw(res.payload, res.kind)[0]

    def expected_semantic(self, raw: bytes, kind) -> bytes:
        """What an exact semantic decode would return: the old canonical form, untruncated."""
        return legacy_canonical(self.prepare(raw, kind)).encode("utf-8", "surrogatepass")


def legacy_code_hex_size(raw: bytes) -> int:
    """ANCHORS.md's legacy row ("zlib-9 stored as hex"): 2 x zlib-9 of the raw bytes, without
    the dict, meta and sig the old service also stored."""
    return 2 * len(zlib.compress(raw, 9))
