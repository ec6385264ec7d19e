"""The NBMF blob byte layout (docs/FORMAT.md): the only module that knows it. New blobs are format v2.

v2 (written today):
    byte 0        bit 7 = 1 (format v2), bit 6 fidelity, bits 5-4 kind, bit 3 fallback (0: the encoder's own
                  codec, 1: its classical fallback), bits 2-0 encoder id (7 = escape: a LEB128 varint id >= 7 follows)
    varint        original length in bytes of the content (the raw payload, or its canonical form)
    4 bytes       CRC-32 (little endian) of the encoder's 32-byte fingerprint, the header before it, then the
                  decoded content: checked after decoding, so damage, another model under the same name or a
                  runtime that diverges is an error, never wrong data
    rest          the codec body
v1 (read forever): byte 0 bits 7-6 = 01, bit 5 fidelity, bits 4-3 kind, bits 2-0 encoder id; the same varints;
    a CRC-32 of the header before it and the body (checked before decoding).

A record under 16 KiB with encoder id < 7 costs 7 bytes of header (1 + 2 + 4) in either format.

>>> fp = bytes(32)
>>> blob = pack_v2(encoder_id=0, fidelity=Fidelity.LOSSLESS, kind=Kind.TEXT, content=b"hello", body=b"xyz",
...                fingerprint=fp)
>>> header, body = unpack(blob)
>>> (header.format_version, header.encoder_id, header.kind.name, header.original_length, header.header_size, body)
(2, 0, 'TEXT', 5, 6, b'xyz')
>>> check_content(header, b"hello", fp)
>>> from_envelope(to_envelope(blob)) == blob
True
"""
from __future__ import annotations

import base64
import binascii
import enum
import re
import zlib
from dataclasses import dataclass

from nbmf.errors import CorruptBlobError, FormatError
from nbmf.modeldir import version_id, version_name  # encoder version names (nbmf.modeldir owns them)

FORMAT_V1 = 1
FORMAT_V2 = 2
FORMAT_WRITTEN = FORMAT_V2  # the format new blobs are written in (migrate re-encodes blobs of older formats)
FINGERPRINT_SIZE = 32  # bytes of an encoder's identity that a v2 checksum covers (sha256 digests)
_ESCAPE = 7
LEGACY = "legacy"  # the version name of old stub blobs (never an encoder id)


class _Spelled(enum.IntEnum):
    """An enum that JSON, Parquet, HTTP and the CLI spell as its lower-case name ("text", "lossless")."""

    @property
    def label(self) -> str:
        """The spelling outside Python: ``Kind.JSON.label == "json"``."""
        return self.name.lower()

    @classmethod
    def of(cls, value):
        """The member for a member, its integer id or its spelling (any case, str or bytes); else ValueError.

        >>> Kind.of("json"), Kind.of(2), Fidelity.of(b"semantic")
        (<Kind.JSON: 1>, <Kind.BYTES: 2>, <Fidelity.SEMANTIC: 1>)
        """
        try:
            if isinstance(value, (bytes, str)):
                return cls[(value.decode() if isinstance(value, bytes) else value).upper()]
            return cls(value)
        except (KeyError, ValueError, UnicodeDecodeError):
            names = ", ".join(m.label for m in cls)
            raise ValueError(f"{cls.__name__.lower()} is one of {names}; got {value!r}") from None


class Fidelity(_Spelled):
    LOSSLESS = 0
    SEMANTIC = 1


class Kind(_Spelled):
    TEXT = 0
    JSON = 1
    BYTES = 2


def is_legacy(blob) -> bool:
    """Whether ``blob`` is an old stub blob: a dict, or JSON text/bytes starting with '{'.

    No v1 blob starts with '{' (0x7B: format bits 01, kind bits 11, and kind 3 is invalid), so the
    first byte alone tells the two formats apart. An envelope's JSON text starts with '{' too: ``is_legacy`` tells
    JSON from binary, ``nbmf.registry.as_blob`` which JSON form it is. Does not validate the legacy blob
    (``legacy.parse`` does).
    """
    if isinstance(blob, dict):
        return True
    if isinstance(blob, str):
        return blob[:1] == "{"
    if isinstance(blob, (bytes, bytearray, memoryview)):
        return bytes(blob[:1]) == b"{"
    return False


def format_of(blob) -> int | str:
    """``"legacy"`` or the blob format version (1, 2) from the first byte alone (no checksum, no decoding)."""
    return LEGACY if is_legacy(blob) else peek_header(blob).format_version


def blob_version(blob) -> str:
    """``legacy``, ``stub`` or ``vN`` for a blob, from its first bytes alone (no checksum, no decoding)."""
    return LEGACY if is_legacy(blob) else version_name(peek_header(blob).encoder_id)


@dataclass(frozen=True)
class Header:
    format_version: int
    encoder_id: int
    fidelity: Fidelity
    kind: Kind
    original_length: int
    header_size: int  # bytes before the body, checksum included
    crc32: int  # v1: of header and body; v2: of fingerprint, header and content
    fallback: bool = False  # v2 bit 3: written by the encoder's classical fallback codec
    prefix: bytes = b""  # the header bytes before the checksum (what the checksum covers first)

    @property
    def version(self) -> str:
        return version_name(self.encoder_id)

    def to_dict(self) -> dict:
        out = {"format": self.format_version, "encoder": self.version, "encoder_id": self.encoder_id,
               "fidelity": self.fidelity.label, "kind": self.kind.label,
               "length": self.original_length, "header_size": self.header_size, "crc32": f"{self.crc32:08x}"}
        if self.format_version >= FORMAT_V2:
            out["fallback"] = self.fallback
        return out


def _varint(n: int) -> bytes:
    if n < 0:
        raise ValueError("varints are unsigned")
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(blob: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(blob):
            raise CorruptBlobError("blob ends inside its header: it was truncated")
        byte = blob[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and shift:
                raise CorruptBlobError("blob header has a non-minimal varint: it was corrupted")
            return value, pos
        shift += 7
        if shift > 63:
            raise CorruptBlobError("blob header varint is too long: it was corrupted")


def _prefix(encoder_id: int, fidelity: Fidelity, kind: Kind, original_length: int, fmt: int = FORMAT_V1,
            fallback: bool = False) -> bytes:
    if encoder_id < 0:
        raise ValueError("encoder ids are >= 0")
    low = encoder_id if encoder_id < _ESCAPE else _ESCAPE
    if fmt == FORMAT_V1:
        if fallback:
            raise ValueError("format v1 has no fallback codec")
        first = (FORMAT_V1 << 6) | (int(Fidelity(fidelity)) << 5) | (int(Kind(kind)) << 3) | low
    elif fmt == FORMAT_V2:
        first = 0x80 | (int(Fidelity(fidelity)) << 6) | (int(Kind(kind)) << 4) | (int(bool(fallback)) << 3) | low
    else:
        raise ValueError(f"blob formats are {FORMAT_V1} and {FORMAT_V2}, not {fmt!r}")
    head = bytes([first]) + (_varint(encoder_id) if low == _ESCAPE else b"")
    return head + _varint(original_length)


def content_checksum(prefix: bytes, content: bytes, fingerprint: bytes) -> int:
    """The v2 checksum: CRC-32 of the encoder's fingerprint, the header bytes before the checksum, the content."""
    if len(fingerprint) != FINGERPRINT_SIZE:
        raise ValueError(f"an encoder fingerprint is {FINGERPRINT_SIZE} bytes, not {len(fingerprint)}")
    return zlib.crc32(content, zlib.crc32(prefix, zlib.crc32(fingerprint)))


def pack(*, encoder_id: int, fidelity: Fidelity, kind: Kind, original_length: int, body: bytes) -> bytes:
    """A v1 blob (read forever, no longer written): header fields, CRC-32 over header and body, then the body."""
    prefix = _prefix(encoder_id, fidelity, kind, original_length)
    crc = zlib.crc32(body, zlib.crc32(prefix))
    return prefix + crc.to_bytes(4, "little") + bytes(body)


def pack_v2(*, encoder_id: int, fidelity: Fidelity, kind: Kind, content: bytes, body: bytes, fingerprint: bytes,
            fallback: bool = False) -> bytes:
    """A v2 blob of ``content`` (what decoding must give back) coded as ``body`` by the encoder whose identity
    is ``fingerprint``: header fields, the content checksum, then the body."""
    prefix = _prefix(encoder_id, fidelity, kind, len(content), FORMAT_V2, fallback)
    return prefix + content_checksum(prefix, bytes(content), fingerprint).to_bytes(4, "little") + bytes(body)


def check_content(header: Header, content: bytes, fingerprint: bytes) -> None:
    """For a v2 blob, raise CorruptBlobError unless ``content`` (what its body decoded to) is what the encoder
    with ``fingerprint`` wrote. Nothing to check for v1 (its CRC was checked before decoding)."""
    if header.format_version < FORMAT_V2:
        return
    if len(content) != header.original_length or content_checksum(header.prefix, content, fingerprint) != header.crc32:
        writer, what = (f"{header.version}'s classical fallback", "zstd dictionary") if header.fallback else (
            header.version, "model")
        raise CorruptBlobError(f"blob content fails its checksum (written by encoder {writer}): the blob was damaged, "
                               f"or this registry's artifact for that version does not hold the {what} that wrote "
                               "it; restore the blob from a replica or the artifact from its source")


def peek_header(blob: bytes) -> Header:
    """Parse the header without verifying the checksum (for inspection of damaged blobs)."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise TypeError(f"a blob is bytes, not {type(blob).__name__}")
    blob = bytes(blob)
    if not blob:
        raise CorruptBlobError("blob is empty")
    if is_legacy(blob):
        raise FormatError("this is a legacy stub blob (JSON), not a binary blob: decode it through nbmf.decode")
    first = blob[0]
    if first & 0x80:
        fmt, fidelity, kind, fallback, low = FORMAT_V2, (first >> 6) & 1, (first >> 4) & 3, bool(first & 8), first & 7
    elif first >> 6 == FORMAT_V1:
        fmt, fidelity, kind, fallback, low = FORMAT_V1, (first >> 5) & 1, (first >> 3) & 3, False, first & 7
    else:
        raise FormatError("unknown blob format (descriptor bits 7-6 are 00; this library reads v1 and v2): "
                          "upgrade nbmf, or this is not an NBMF blob")
    if kind == 3:
        raise CorruptBlobError("blob header has an invalid payload kind: it was corrupted")
    pos = 1
    encoder_id = low
    if low == _ESCAPE:
        encoder_id, pos = _read_varint(blob, pos)
        if encoder_id < _ESCAPE:
            raise CorruptBlobError("blob header escapes a small encoder id: it was corrupted")
    length, pos = _read_varint(blob, pos)
    if len(blob) < pos + 4:
        raise CorruptBlobError("blob ends inside its header: it was truncated")
    crc = int.from_bytes(blob[pos : pos + 4], "little")
    return Header(fmt, encoder_id, Fidelity(fidelity), Kind(kind), length, pos + 4, crc, fallback, blob[:pos])


def unpack(blob: bytes) -> tuple[Header, bytes]:
    """(header, body). A v1 blob's checksum is verified here (damage raises CorruptBlobError); a v2 blob's covers
    the decoded content, so whoever decodes the body must then call ``check_content``."""
    header = peek_header(blob)
    blob = bytes(blob)
    n = header.header_size
    if header.format_version == FORMAT_V1 and zlib.crc32(blob[n:], zlib.crc32(blob[: n - 4])) != header.crc32:
        raise CorruptBlobError(f"blob fails its CRC-32 check ({len(blob)} bytes, written by encoder {header.version}): "
                               "it was corrupted, truncated or extended; restore it from a replica")
    return header, blob[n:]


ENVELOPE_FIELDS = ("format", "encoder", "fidelity", "kind", "length", "crc32", "body")  # v2 adds "fallback"


def is_envelope(obj) -> bool:
    """Whether a JSON object is meant as an envelope: it has an ``encoder`` or a ``body`` (fields no legacy stub
    blob has). ``from_envelope`` then checks every field."""
    return isinstance(obj, dict) and ("encoder" in obj or "body" in obj)


def to_envelope(blob: bytes) -> dict:
    """The JSON form for HTTP: header fields as JSON, the body base64. ``from_envelope`` inverts it."""
    header, body = unpack(blob)
    out = {"format": header.format_version, "encoder": header.version, "fidelity": header.fidelity.label,
           "kind": header.kind.label, "length": header.original_length, "crc32": f"{header.crc32:08x}",
           "body": base64.b64encode(body).decode("ascii")}
    if header.format_version >= FORMAT_V2:
        out["fallback"] = header.fallback
    return out


def from_envelope(envelope: dict) -> bytes:
    """The exact blob bytes of an envelope; a malformed envelope raises FormatError, a damaged one CorruptBlobError
    (v1: its CRC is checked here; v2: the content checksum is checked when the blob is decoded)."""
    if not isinstance(envelope, dict):
        raise FormatError(f"an envelope is a JSON object, not {type(envelope).__name__}")
    fmt = envelope.get("format")
    fields = ENVELOPE_FIELDS + (("fallback",) if fmt == FORMAT_V2 else ())
    missing = [k for k in fields if k not in envelope]
    if missing:
        raise FormatError(f"envelope lacks fields {missing}; it needs {list(fields)}")
    try:
        if fmt not in (FORMAT_V1, FORMAT_V2) or isinstance(fmt, bool):
            raise FormatError(f"envelope format {fmt!r} is not 1 or 2")
        if not isinstance(envelope["encoder"], str):
            raise FormatError("envelope encoder must be a version name such as 'v1' or 'stub'")
        encoder_id = version_id(envelope["encoder"])
        fidelity = Fidelity[str(envelope["fidelity"]).upper()]
        kind = Kind[str(envelope["kind"]).upper()]
        length = envelope["length"]
        if not isinstance(length, int) or isinstance(length, bool) or not 0 <= length < 1 << 63:
            raise FormatError("envelope length must be an integer in [0, 2**63)")
        if not isinstance(envelope["crc32"], str) or not re.fullmatch(r"[0-9a-fA-F]{8}", envelope["crc32"]):
            raise FormatError(f"envelope crc32 {envelope['crc32']!r} is not 8 hex digits")
        crc = int(envelope["crc32"], 16)
        fallback = envelope.get("fallback", False)
        if not isinstance(fallback, bool):
            raise FormatError("envelope fallback must be true or false")
        body = base64.b64decode(envelope["body"], validate=True)
    except (KeyError, ValueError, TypeError, AttributeError, binascii.Error) as e:
        if isinstance(e, FormatError):
            raise
        raise FormatError(f"envelope has an invalid field: {e}") from None
    prefix = _prefix(encoder_id, fidelity, kind, length, fmt, fallback)
    blob = prefix + crc.to_bytes(4, "little") + body
    unpack(blob)  # v1: the checksum must hold: an edited envelope is corruption, not a new blob
    return blob
