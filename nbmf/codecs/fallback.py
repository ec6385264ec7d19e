"""The classical fallback of neural version N: zstd frames made with the dictionary shipped in N's artifact.

A format-v2 blob with descriptor bit 3 set holds one such frame (docs/FORMAT.md). The registry writes it
whenever its body is the smallest of the record's candidates (neural, this, the stub), so no record is stored
larger than zstd with the dictionary would store it, plus the header. This module owns the frame: level 19,
no checksum, no content size, no dictionary id (the blob's header carries the length, a content checksum and
the encoder id that names the dictionary), which is also how ``nbmf bench`` writes its zstd anchors, and no magic
number (zstd's magicless format: the header's fallback bit already says what the body is), so a body is the anchor's
frame less its first 4 bytes, ``28 b5 2f fd``.

Decoding is bounded before and while zstd runs: a length the body cannot hold (more than ``MAX_EXPANSION``
bytes per body byte), a frame of another form (content size, checksum or dictionary id present) and a window
over ``MAX_WINDOW`` are refused unread, and zstd writes into a buffer of the header's length + 1 bytes.

>>> codec = FallbackCodec("v1", bytes(range(256)) * 8)   # raw content used as a dictionary
>>> body = codec.encode_many([(b"hello hello hello", 0)])[0]
>>> codec.decode_many([(body, 0, 17)])
[b'hello hello hello']
"""
from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import zstandard

from nbmf.errors import CorruptBlobError

LEVEL = 19  # zstd's strongest standard level; the anchor every neural version is held to (../shared/ANCHORS.md)
MAX_WINDOW = 1 << 23  # bytes: the largest window a level-19 frame uses and what zstd asks every decoder to support;
# a frame asking for more is refused before zstd allocates its window
MAX_EXPANSION = 1 << 15  # output bytes per body byte at most: no zstd block beats an RLE block (4 bytes, 128 KiB)


MAGIC = b"\x28\xb5\x2f\xfd"  # zstd's frame magic number (RFC 8878 3.1.1), which a fallback body leaves out


def compressor(dictionary: bytes | None = None, level: int = LEVEL, magic: bool = True) -> zstandard.ZstdCompressor:
    """The one frame writer: no checksum, no content size, no dictionary id; ``magic=False`` leaves out the magic
    number and nothing else (a fallback body). Not thread-safe: one per thread.

    Reuse it: zstd loads the dictionary into its context on the first frame (about 5 ms at level 19) and keeps it
    for the next ones. ``precompute_compress`` buys nothing on top (compress time per val record 0.99x, noise) and
    makes some frames differ from nbmf bench's zstd-19-dict anchor (1 of 2,490 val records, 9 bytes)."""
    d = zstandard.ZstdCompressionDict(dictionary) if dictionary else None
    # Only the level and the frame flags are set: zstd still sizes every other parameter to the record and the
    # dictionary, as with level=, so the frames are the same bytes either way (bar the magic).
    params = zstandard.ZstdCompressionParameters(
        compression_level=level, write_checksum=0, write_content_size=0, write_dict_id=0,
        format=_format(magic))
    return zstandard.ZstdCompressor(dict_data=d, compression_params=params)


def decompressor(dictionary: bytes | None = None, magic: bool = True) -> zstandard.ZstdDecompressor:
    """A reader of those frames (``magic=False``: without the magic number) whose window is at most MAX_WINDOW
    (not thread-safe: one per thread)."""
    d = zstandard.ZstdCompressionDict(dictionary) if dictionary else None
    return zstandard.ZstdDecompressor(dict_data=d, max_window_size=MAX_WINDOW, format=_format(magic))


def _format(magic: bool) -> int:
    return zstandard.FORMAT_ZSTD1 if magic else zstandard.FORMAT_ZSTD1_MAGICLESS


def fingerprint(dictionary_sha256: str) -> bytes:
    """A fallback's identity in v2 checksums: sha256 of ``nbmf fallback: zstd dictionary `` and the dictionary's
    ``sha256:<hex>``. It names the dictionary alone, the one thing a fallback body needs to decode (not the
    model: the neural fingerprint, nbmf.artifact.fingerprint, does not cover the dictionary)."""
    return hashlib.sha256(b"nbmf fallback: zstd dictionary " + dictionary_sha256.encode("ascii")).digest()


class FallbackCodec:
    """Encode/decode raw bytes as magicless zstd frames with one version's dictionary. Reuse the object (it holds the
    dictionary; each thread gets its own zstd contexts)."""

    self_verifying = True  # encode_many(verify=True) decodes every body with decode_many and compares

    def __init__(self, version: str, dictionary: bytes):
        from nbmf.modeldir import neural_id

        self.version = version
        self.encoder_id = neural_id(version)
        self.name = f"{version}:fallback"  # how Registry.stats counts its blobs
        self.dictionary = bytes(dictionary)
        self.dictionary_sha256 = "sha256:" + hashlib.sha256(self.dictionary).hexdigest()
        self.fingerprint = fingerprint(self.dictionary_sha256)
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"FallbackCodec({self.version}, zstd-{LEVEL}, dictionary {self.dictionary_sha256[:19]}...)"

    def _contexts(self) -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
        ctx = getattr(self._local, "ctx", None)
        if ctx is None:
            ctx = (compressor(self.dictionary, magic=False), decompressor(self.dictionary, magic=False))
            self._local.ctx = ctx
        return ctx

    def max_length(self, body_size: int) -> int:
        """Most bytes a body of ``body_size`` bytes can decode to: a longer claimed length is refused unread."""
        return int(body_size) * MAX_EXPANSION

    def encode_many(self, items, fidelity=0, verify: bool = False) -> list[bytes | None]:
        """Bodies for [(raw, kind), ...]; with ``verify``, None for a body that does not decode to its record."""
        cctx = self._contexts()[0]
        out: list[bytes | None] = []
        for raw, _ in items:
            raw = bytes(raw)
            body = cctx.compress(raw)
            if verify:
                try:
                    body = body if self._decode(body, len(raw)) == raw else None
                except CorruptBlobError:
                    body = None
            out.append(body)
        return out

    def decode_many(self, items, fidelity=0) -> list[bytes]:
        """Raw bytes for [(body, kind, original_length), ...]; CorruptBlobError for a body that does not decode
        to exactly that many bytes."""
        return [self._decode(bytes(body), int(length)) for body, _, length in items]

    def _decode(self, body: bytes, length: int) -> bytes:
        if length > self.max_length(len(body)):
            raise CorruptBlobError(f"blob claims {length} bytes, more than a {len(body)}-byte zstd body can hold (at "
                                   f"most {self.max_length(len(body))}): it is corrupted or forged")
        try:
            params = zstandard.get_frame_parameters(body, format=zstandard.FORMAT_ZSTD1_MAGICLESS)
        except zstandard.ZstdError as e:
            raise CorruptBlobError(f"{self.name} body is not a zstd frame ({e}): the blob is damaged") from None
        if params.content_size != zstandard.CONTENTSIZE_UNKNOWN or params.dict_id or params.has_checksum:
            raise CorruptBlobError(f"{self.name} body is a zstd frame with a content size, dictionary id or checksum, "
                                   "which nbmf never writes: the blob is damaged or forged")
        if params.window_size > MAX_WINDOW:
            raise CorruptBlobError(f"{self.name} body asks for a {params.window_size}-byte zstd window (at most "
                                   f"{MAX_WINDOW}): the blob is damaged or forged")
        if _frame_size(body) != len(body):  # zstandard's own allow_extra_data=False lets trailing bytes through
            raise CorruptBlobError(f"{self.name} body is not one whole zstd frame (cut, or followed by other bytes): "
                                   "the blob is damaged")
        try:
            # the buffer is the header's length + 1 (a longer frame fails to fit), never more
            out = self._contexts()[1].decompress(body, max_output_size=length + 1, allow_extra_data=False)
        except zstandard.ZstdError as e:
            raise CorruptBlobError(f"{self.name} body does not decode ({e}): the blob is damaged, or was written "
                                   "with another dictionary") from None
        if len(out) != length:
            raise CorruptBlobError(f"{self.name} body decodes to {len(out)}{'+' if len(out) > length else ''} bytes, "
                                   f"the header says {length}: the blob is damaged")
        return out


def _frame_size(body: bytes) -> int:
    """Bytes of the magicless zstd frame (without checksum) at the start of ``body``, from its block headers (RFC
    8878 3.1.1.2: 3 bytes each, bit 0 last block, bits 1-2 type, bits 3-23 size; an RLE block's content is 1 byte); a
    frame cut short or of a reserved block type gives len(body) + 1."""
    # frame_header_size takes no format (python-zstandard 0.25) and misreads a magicless header: give it the magic
    pos = zstandard.frame_header_size(MAGIC + body) - len(MAGIC)
    while pos + 3 <= len(body):
        header = int.from_bytes(body[pos:pos + 3], "little")
        kind = (header >> 1) & 3
        if kind == 3:
            break
        pos += 3 + (1 if kind == 1 else header >> 3)
        if header & 1:
            return pos
    return len(body) + 1


def load(path, manifest: dict | None = None) -> FallbackCodec | None:
    """The fallback codec of the artifact at ``path`` (its verified ``manifest`` if already read), or None when the
    artifact ships no dictionary (exported before the fallback existed)."""
    from nbmf.artifact import read_dictionary, read_manifest
    from nbmf.errors import ArtifactError

    path = Path(path)
    manifest = manifest if manifest else read_manifest(path)
    data = read_dictionary(path, manifest)
    if data is None:
        return None
    try:
        return FallbackCodec(manifest.get("version"), data)
    except ValueError as e:
        raise ArtifactError(f"{path}: {e}") from None
