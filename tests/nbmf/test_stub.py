"""The stub codec (encoder id 0): zlib-9 bodies, exact lengths, and the decompression-bomb guard."""
from __future__ import annotations

import tracemalloc
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbmf.blob import Kind
from nbmf.codecs.stub import StubCodec
from nbmf.errors import CorruptBlobError

stub = StubCodec()


def test_identity():
    assert (stub.name, stub.encoder_id) == ("stub", 0)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000), st.sampled_from(list(Kind)))
def test_body_is_zlib9_and_round_trips(raw, kind):
    body = stub.encode_raw(raw, kind)
    assert body == zlib.compress(raw, 9)
    assert stub.decode_raw(body, kind, len(raw)) == raw


def test_batch_forms_match_one_by_one():
    raws = [b"", b"a", b"hello " * 50, bytes(range(256))]
    bodies = stub.encode_many([(r, Kind.BYTES) for r in raws])
    assert bodies == [stub.encode_raw(r) for r in raws]
    assert stub.decode_many([(b, Kind.BYTES, len(r)) for b, r in zip(bodies, raws)]) == raws


RAW = b"The user prefers metric units and short answers. " * 4


@pytest.mark.parametrize("length", [0, len(RAW) - 1, len(RAW) + 1, 10 * len(RAW)])
def test_wrong_header_length_is_corrupt(length):
    with pytest.raises(CorruptBlobError, match="header says"):
        stub.decode_raw(zlib.compress(RAW, 9), Kind.TEXT, length)


@pytest.mark.parametrize("body", [
    b"", b"not zlib at all", zlib.compress(RAW, 9)[:-1], zlib.compress(RAW, 9)[:10],
    zlib.compress(RAW, 9) + b"\x00", zlib.compress(RAW, 9) + zlib.compress(b"x"),
])
def test_damaged_bodies_are_corrupt(body):
    with pytest.raises(CorruptBlobError):
        stub.decode_raw(body, Kind.TEXT, len(RAW))


def test_bomb_guard_never_inflates_past_the_header_length():
    """A 64 MiB zlib bomb (~64 KB body) under a 100-byte header: refused without allocating the 64 MiB."""
    bomb = zlib.compress(b"\x00" * (64 << 20), 9)
    tracemalloc.start()
    try:
        with pytest.raises(CorruptBlobError):
            stub.decode_raw(bomb, Kind.BYTES, 100)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"decoding allocated {peak} bytes"


def test_stub_blobs_through_the_registry(stub_registry, sample_payloads):
    blobs = stub_registry.encode_many(sample_payloads)
    for payload, blob in zip(sample_payloads, blobs):
        h = stub_registry.inspect(blob)
        assert h.encoder_id == 0 and h.version == "stub"
        assert blob[h.header_size:] == zlib.compress(blob_raw(payload), 9)
    assert [r.payload for r in stub_registry.decode_many(blobs)] == sample_payloads


def test_semantic_stub_blob_codes_the_whole_canonical_form(stub_registry):
    """Unlike the legacy stub's 2048-character preview, the v1 stub keeps the full canonical form."""
    text = "word   " * 2000
    blob = stub_registry.encode(text, fidelity="semantic")
    assert stub_registry.decode(blob) == " ".join(text.split())
    assert stub_registry.inspect(blob).original_length == len(" ".join(text.split()))


def blob_raw(payload) -> bytes:
    from nbmf.payload import to_raw

    return to_raw(payload)[0]
