"""The v1 byte layout (docs/FORMAT.md): header fields, varints, CRC-32, every kind of damage, the envelope."""
from __future__ import annotations

import base64
import json
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbmf import blob as blobfmt
from nbmf.blob import Fidelity, Kind, from_envelope, pack, peek_header, to_envelope, unpack
from nbmf.errors import CorruptBlobError, FormatError, NBMFError

fidelities = st.sampled_from(list(Fidelity))
kinds = st.sampled_from(list(Kind))
encoder_ids = st.one_of(st.integers(0, 12), st.integers(0, 1 << 40))
lengths = st.one_of(st.integers(0, 300), st.integers(0, 1 << 62))


def _pack(encoder_id=0, fidelity=Fidelity.LOSSLESS, kind=Kind.TEXT, original_length=5, body=b"body"):
    return pack(encoder_id=encoder_id, fidelity=fidelity, kind=kind, original_length=original_length, body=body)


@settings(max_examples=300, deadline=None)
@given(encoder_ids, fidelities, kinds, lengths, st.binary(max_size=64))
def test_pack_unpack_round_trip(encoder_id, fidelity, kind, length, body):
    blob = _pack(encoder_id, fidelity, kind, length, body)
    header, got = unpack(blob)
    assert got == body
    assert (header.format_version, header.encoder_id, header.fidelity, header.kind, header.original_length) == (
        1, encoder_id, fidelity, kind, length)
    assert header.header_size == len(blob) - len(body)
    assert header.crc32 == zlib.crc32(blob[: header.header_size - 4] + body)
    assert peek_header(blob) == header and unpack(bytearray(blob))[0] == header and unpack(memoryview(blob))[0] == header


@pytest.mark.parametrize("encoder_id, fidelity, kind, first", [
    (0, Fidelity.LOSSLESS, Kind.TEXT, 0b01_0_00_000),
    (0, Fidelity.SEMANTIC, Kind.TEXT, 0b01_1_00_000),
    (1, Fidelity.LOSSLESS, Kind.JSON, 0b01_0_01_001),
    (6, Fidelity.SEMANTIC, Kind.BYTES, 0b01_1_10_110),
    (7, Fidelity.LOSSLESS, Kind.BYTES, 0b01_0_10_111),
])
def test_first_byte_bit_fields(encoder_id, fidelity, kind, first):
    assert _pack(encoder_id, fidelity, kind)[0] == first


@pytest.mark.parametrize("encoder_id, length, header_hex", [
    (0, 0, "4000"),
    (0, 40, "4028"),
    (0, 127, "407f"),
    (0, 128, "408001"),
    (1, 925, "419d07"),
    (0, 16383, "40ff7f"),
    (0, 16384, "40808001"),
    (7, 1, "470701"),
    (300, 1, "47ac0201"),
])
def test_header_bytes_are_pinned(encoder_id, length, header_hex):
    """The bytes before the CRC for a few headers, written out by hand from docs/FORMAT.md."""
    blob = _pack(encoder_id, Fidelity.LOSSLESS, Kind.TEXT, length, b"")
    assert blob[:-4].hex() == header_hex
    assert blob[-4:] == zlib.crc32(bytes.fromhex(header_hex)).to_bytes(4, "little")


def test_more_pinned_headers():
    assert _pack(1, Fidelity.LOSSLESS, Kind.JSON, 925, b"")[:-4].hex() == "499d07"
    assert _pack(0, Fidelity.SEMANTIC, Kind.TEXT, 0, b"")[:-4].hex() == "6000"


@pytest.mark.parametrize("length, size", [(0, 6), (127, 6), (128, 7), (925, 7), (16383, 7), (16384, 8), ((1 << 21) - 1, 8), (1 << 21, 9)])
def test_header_size_budget(length, size):
    """<= 7 bytes (CRC included) for every record under 16 KiB written by encoder ids 0-6."""
    for encoder_id in range(7):
        assert peek_header(_pack(encoder_id, original_length=length)).header_size == size
    assert peek_header(_pack(7, original_length=length)).header_size == size + 1


def test_header_fields_as_dict():
    blob = _pack(2, Fidelity.SEMANTIC, Kind.JSON, 300, b"xy")
    d = unpack(blob)[0].to_dict()
    assert d == {"format": 1, "encoder": "v2", "encoder_id": 2, "fidelity": "semantic", "kind": "json",
                 "length": 300, "header_size": 7, "crc32": f"{zlib.crc32(blob[:3] + b'xy'):08x}"}


@pytest.mark.parametrize("name, eid", [("stub", 0), ("v1", 1), ("v7", 7), ("v300", 300)])
def test_version_names(name, eid):
    assert blobfmt.version_id(name) == eid and blobfmt.version_name(eid) == name


@pytest.mark.parametrize("name", ["v0", "V1", "1", "v", "v-1", "stubby", ""])
def test_bad_version_names_are_value_errors(name):
    with pytest.raises(ValueError, match="stub"):
        blobfmt.version_id(name)


def test_pack_rejects_caller_misuse():
    with pytest.raises(ValueError):
        _pack(encoder_id=-1)
    with pytest.raises(ValueError):
        _pack(original_length=-1)
    with pytest.raises(ValueError):
        _pack(kind=3)
    with pytest.raises(TypeError):
        unpack("not bytes")


# -- damage -------------------------------------------------------------------------------------
# A v1 blob's CRC covers its header and body, so unpack refuses any damage that keeps the v1 layout. A v2 blob's
# covers its decoded content, so its damage is refused by decoding (tests/nbmf/test_registry.py, test_fuzz.py).
SAMPLES = [
    _pack(0, Fidelity.LOSSLESS, Kind.TEXT, 40, zlib.compress(b"Remember: the user prefers metric units.", 9)),
    _pack(1, Fidelity.SEMANTIC, Kind.JSON, 925, bytes(range(37))),
    _pack(300, Fidelity.LOSSLESS, Kind.BYTES, 16384, b"\x00" * 9),
    _pack(0, Fidelity.LOSSLESS, Kind.TEXT, 0, b""),
]


def _still_v1(bad: bytes) -> bool:
    return bool(bad) and bad[0] >> 6 == 1  # damage that left the v1 layout is a v2 or unknown blob


@pytest.mark.parametrize("blob", SAMPLES, ids=lambda b: b[:4].hex())
def test_every_bit_flip_raises(blob):
    """A flip of bit 6 gives format bits 00: FormatError; of bit 7, a v2 blob (refused by decoding, not here);
    every other flip is CorruptBlobError."""
    for i in range(len(blob) * 8):
        bad = bytearray(blob)
        bad[i // 8] ^= 1 << (i % 8)
        if i == 7:
            assert peek_header(bytes(bad)).format_version == 2
            continue
        with pytest.raises(FormatError if i == 6 else CorruptBlobError):
            unpack(bytes(bad))


@pytest.mark.parametrize("blob", SAMPLES, ids=lambda b: b[:4].hex())
def test_every_byte_value_at_every_position_raises(blob):
    for i in range(len(blob)):
        for v in range(256):
            if v == blob[i]:
                continue
            bad = bytearray(blob)
            bad[i] = v
            if not _still_v1(bad):
                continue
            with pytest.raises(NBMFError):
                unpack(bytes(bad))


@pytest.mark.parametrize("blob", SAMPLES, ids=lambda b: b[:4].hex())
def test_every_truncation_and_extension_raises(blob):
    for n in range(len(blob)):
        with pytest.raises(CorruptBlobError):
            unpack(blob[:n])
    for tail in (b"\x00", b"\x00" * 4, b"\xff", b"garbage", blob, blob[-4:]):
        with pytest.raises(CorruptBlobError):
            unpack(blob + tail)


@pytest.mark.parametrize("bad_hex, what", [
    ("", "empty"),
    ("c0", "format version 3"),
    ("00", "format version 0"),
    ("80", "v2, ends inside the length"),
    ("b0", "v2, kind bits 11"),
    ("8f0600000000", "v2, escaped encoder id below 7"),
    ("58", "kind bits 11"),
    ("40", "ends inside the length"),
    ("4080", "ends inside the length varint"),
    ("4000000000", "ends inside the CRC"),
    ("40800000000000", "non-minimal length varint"),
    ("470600000000", "escaped encoder id below 7"),
    ("40" + "ff" * 10 + "01" + "00" * 4, "overlong varint"),
])
def test_malformed_headers_are_typed_errors(bad_hex, what):
    with pytest.raises(NBMFError) as e:
        peek_header(bytes.fromhex(bad_hex))
    assert isinstance(e.value, (CorruptBlobError, FormatError)), what


def test_unknown_format_says_what_it_reads():
    with pytest.raises(FormatError, match="reads v1 and v2"):
        peek_header(bytes([0b00_0_00_000]) + b"\x01" + b"\x00" * 4)


def test_peek_header_reads_a_damaged_blob_that_unpack_refuses():
    blob = bytearray(SAMPLES[0])
    blob[-1] ^= 0x10
    assert peek_header(bytes(blob)).original_length == 40
    with pytest.raises(CorruptBlobError, match="CRC-32"):
        unpack(bytes(blob))


def test_legacy_json_bytes_are_named_as_legacy_by_the_blob_layer():
    with pytest.raises(FormatError, match="legacy"):
        unpack(b'{"meta": {}, "code": "", "sig": ""}')


# -- envelope -----------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(encoder_ids, fidelities, kinds, lengths, st.binary(max_size=64))
def test_envelope_round_trips_through_json(encoder_id, fidelity, kind, length, body):
    blob = _pack(encoder_id, fidelity, kind, length, body)
    env = to_envelope(blob)
    assert set(env) == set(blobfmt.ENVELOPE_FIELDS)
    wire = json.loads(json.dumps(env))
    assert from_envelope(wire) == blob
    assert base64.b64decode(env["body"]) == body and env["length"] == length


def test_envelope_fields():
    blob = SAMPLES[1]
    h, body = unpack(blob)
    assert to_envelope(blob) == {"format": 1, "encoder": "v1", "fidelity": "semantic", "kind": "json", "length": 925,
                                 "crc32": f"{h.crc32:08x}", "body": base64.b64encode(body).decode()}


@pytest.mark.parametrize("field, value", [
    ("encoder", "v2"), ("encoder", "stub"), ("fidelity", "lossless"), ("kind", "bytes"), ("length", 926),
    ("crc32", "00000000"), ("body", base64.b64encode(b"other").decode()),
])
def test_edited_envelope_is_corrupt(field, value):
    env = to_envelope(SAMPLES[1])
    with pytest.raises(CorruptBlobError):
        from_envelope({**env, field: value})


@pytest.mark.parametrize("change", [
    {"format": 2}, {"format": "1"}, {"encoder": "v0"}, {"encoder": "neural"}, {"fidelity": "exact"},
    {"kind": "xml"}, {"length": -1}, {"length": "925"}, {"length": True}, {"length": 1.5}, {"crc32": "xyz"},
    {"crc32": 12}, {"body": "not base64!"}, {"body": None},
])
def test_malformed_envelope_is_format_error(change):
    env = to_envelope(SAMPLES[1])
    with pytest.raises(FormatError):
        from_envelope({**env, **change})


@pytest.mark.parametrize("missing", blobfmt.ENVELOPE_FIELDS)
def test_envelope_missing_field_is_format_error(missing):
    env = to_envelope(SAMPLES[1])
    del env[missing]
    with pytest.raises(FormatError, match=missing):
        from_envelope(env)


@pytest.mark.parametrize("not_a_dict", [None, [], "{}", b"{}"])
def test_envelope_must_be_an_object(not_a_dict):
    with pytest.raises(FormatError):
        from_envelope(not_a_dict)


@pytest.mark.parametrize("change", [{"crc32": "-1"}, {"crc32": "1ffffffff"}, {"encoder": 1}, {"encoder": None}])
def test_envelope_with_out_of_range_fields_is_format_error(change):
    env = to_envelope(SAMPLES[1])
    with pytest.raises(FormatError):
        from_envelope({**env, **change})


# -- format v2 --------------------------------------------------------------------------------------
FP = bytes(range(32))


def _pack2(encoder_id=0, fidelity=Fidelity.LOSSLESS, kind=Kind.TEXT, content=b"hello", body=b"body", fallback=False,
           fingerprint=FP):
    return blobfmt.pack_v2(encoder_id=encoder_id, fidelity=fidelity, kind=kind, content=content, body=body,
                           fingerprint=fingerprint, fallback=fallback)


@pytest.mark.parametrize("encoder_id, fidelity, kind, fallback, first", [
    (0, Fidelity.LOSSLESS, Kind.TEXT, False, 0b1_0_00_0_000),
    (0, Fidelity.SEMANTIC, Kind.TEXT, False, 0b1_1_00_0_000),
    (1, Fidelity.LOSSLESS, Kind.JSON, False, 0b1_0_01_0_001),
    (1, Fidelity.LOSSLESS, Kind.JSON, True, 0b1_0_01_1_001),
    (6, Fidelity.SEMANTIC, Kind.BYTES, False, 0b1_1_10_0_110),
    (7, Fidelity.LOSSLESS, Kind.BYTES, False, 0b1_0_10_0_111),
])
def test_v2_first_byte_bit_fields(encoder_id, fidelity, kind, fallback, first):
    blob = _pack2(encoder_id, fidelity, kind, fallback=fallback)
    assert blob[0] == first
    h = peek_header(blob)
    assert (h.format_version, h.encoder_id, h.fidelity, h.kind, h.fallback) == (2, encoder_id, fidelity, kind, fallback)


@pytest.mark.parametrize("encoder_id, length, header_hex", [
    (0, 0, "8000"), (1, 925, "919d07"), (0, 16384, "80808001"), (300, 1, "87ac0201"),
])
def test_v2_header_bytes_are_pinned(encoder_id, length, header_hex):
    """The v2 bytes before the checksum, from docs/FORMAT.md; the checksum is CRC-32(fingerprint, header, content)."""
    content = b"a" * length
    blob = _pack2(encoder_id, Fidelity.LOSSLESS, Kind.JSON if encoder_id == 1 else Kind.TEXT, content, b"")
    assert blob[:-4].hex() == header_hex
    assert blob[-4:] == zlib.crc32(FP + bytes.fromhex(header_hex) + content).to_bytes(4, "little")


@pytest.mark.parametrize("length, size", [(0, 6), (127, 6), (128, 7), (16383, 7), (16384, 8)])
def test_v2_header_size_budget(length, size):
    """<= 7 bytes for every record under 16 KiB written by encoder ids 0-6, as in v1."""
    for encoder_id in range(7):
        assert peek_header(_pack2(encoder_id, content=b"x" * length)).header_size == size


def test_v2_checksum_binds_content_header_and_fingerprint():
    blob = _pack2(content=b"hello")
    h, body = unpack(blob)
    assert body == b"body" and h.prefix == blob[:2]
    blobfmt.check_content(h, b"hello", FP)
    for content, fp in [(b"hellp", FP), (b"hell", FP), (b"hello", bytes(32)), (b"hello", FP[::-1])]:
        with pytest.raises(CorruptBlobError, match="checksum"):
            blobfmt.check_content(h, content, fp)
    with pytest.raises(ValueError):
        blobfmt.content_checksum(b"", b"", b"short")


def test_v1_headers_need_no_content_check():
    h = peek_header(_pack())
    blobfmt.check_content(h, b"anything", b"")  # v1: its CRC was checked by unpack


def test_format_of():
    assert blobfmt.format_of(_pack()) == 1 and blobfmt.format_of(_pack2()) == 2
    assert blobfmt.format_of(b'{"meta": {}}') == "legacy" and blobfmt.FORMAT_WRITTEN == 2


@settings(max_examples=200, deadline=None)
@given(encoder_ids, fidelities, kinds, st.binary(max_size=40), st.binary(max_size=40), st.booleans())
def test_v2_envelope_round_trips(encoder_id, fidelity, kind, content, body, fallback):
    blob = _pack2(encoder_id, fidelity, kind, content, body, fallback)
    env = json.loads(json.dumps(to_envelope(blob)))
    assert env["format"] == 2 and env["fallback"] is fallback
    assert from_envelope(env) == blob


@pytest.mark.parametrize("change", [{"fallback": "yes"}, {"crc32": "0x123456"}, {"crc32": " 1234567"},
                                    {"format": True}, {"format": 3}])
def test_v2_malformed_envelope_is_format_error(change):
    env = {**to_envelope(_pack2()), **change}
    with pytest.raises(FormatError):
        from_envelope(env)


def test_v2_envelope_without_fallback_is_format_error():
    env = to_envelope(_pack2())
    del env["fallback"]
    with pytest.raises(FormatError, match="fallback"):
        from_envelope(env)
