"""The stub codec (encoder id 0, "stub"): zlib level 9. The fallback for every record."""
from __future__ import annotations

import hashlib
import zlib

from nbmf.errors import CorruptBlobError


class StubCodec:
    name = "stub"
    encoder_id = 0
    fingerprint = hashlib.sha256(b"nbmf stub: zlib level 9").digest()  # its identity in v2 checksums

    def encode_raw(self, raw: bytes, kind=None, fidelity=0) -> bytes:
        return zlib.compress(bytes(raw), 9)

    def decode_raw(self, body: bytes, kind, original_length: int, fidelity=0) -> bytes:
        d = zlib.decompressobj()
        try:
            # never inflate past the header's length (+1 to notice a longer stream): a bomb guard
            out = d.decompress(bytes(body), original_length + 1)
        except zlib.error as e:
            raise CorruptBlobError(f"stub body is not a zlib stream ({e}): the blob is damaged") from None
        if len(out) != original_length or not d.eof or d.unused_data or d.unconsumed_tail:
            raise CorruptBlobError(f"stub body inflates to {len(out)}{'+' if not d.eof else ''} bytes, "
                                   f"the header says {original_length}: the blob is damaged")
        return out

    def encode_many(self, items, fidelity=0, verify: bool = False) -> list[bytes]:
        return [self.encode_raw(raw) for raw, _ in items]

    def decode_many(self, items, fidelity=0) -> list[bytes]:
        return [self.decode_raw(body, kind, n) for body, kind, n in items]
