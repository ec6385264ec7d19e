"""Fuzz harness: mutated honest blobs of every codec and format, and hostile headers, never decode wrong.

Every input either raises a typed NBMFError or decodes to exactly what the honest blob holds (damage a codec
ignores, such as a deflate stream's padding bits). ``bench/fuzz.py`` runs the same classes at scale (a million
blobs, counts in the session notes); this keeps a few hundred of each in every test run.
"""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.artifacts import sample_records
from nbmf import blob as blobfmt
from nbmf.errors import NBMFError
from nbmf.payload import to_raw
from nbmf.registry import Registry, default_model_dir

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def reg():
    return Registry(default_model_dir())


def _as_v1(blob: bytes) -> bytes:
    h, body = blobfmt.unpack(blob)
    return blobfmt.pack(encoder_id=h.encoder_id, fidelity=h.fidelity, kind=h.kind, original_length=h.original_length,
                        body=body)


@pytest.fixture(scope="module")
def honest(reg, make_legacy_blob):
    """(blob, payload) for small sample records: neural, zstd fallback and stub, lossless and semantic, v2, v1 (not
    the fallback's: v1 has none) and legacy."""
    payloads = [r["data"] for r in sample_records(limit=60)]
    payloads = [p for p in payloads if len(json.dumps(p)) < 600][:12] + ["", "x", b"\x00\xff", {"k": [1, None]}]
    out = []
    for version in (None, "stub"):
        for fidelity in ("lossless", "semantic"):
            for b in reg.encode_many(payloads, fidelity=fidelity, version=version):
                out += [(b, reg.decode(b))] + ([] if blobfmt.peek_header(b).fallback else [(_as_v1(b), reg.decode(b))])
    fb = reg.fallback(reg.current)  # its blob of each record, whether or not the registry would keep it
    for p in payloads:
        raw, kind = to_raw(p)
        b = blobfmt.pack_v2(encoder_id=fb.encoder_id, fidelity=blobfmt.Fidelity.LOSSLESS, kind=kind, content=raw,
                            body=fb.encode_many([(raw, kind)])[0], fingerprint=fb.fingerprint, fallback=True)
        out.append((b, reg.decode(b)))
    for p in payloads[:6]:
        for fidelity in ("lossless", "semantic"):
            legacy = json.dumps(make_legacy_blob(p, fidelity)).encode()
            out.append((legacy, reg.decode(legacy)))
    assert {blobfmt.blob_version(b) for b, _ in out} >= {"stub", "legacy", reg.current}
    return out


def _never_wrong(reg, bad: bytes, expected) -> None:
    try:
        got = reg.decode(bad)
    except NBMFError:
        return
    assert got == expected and type(got) is type(expected), bad.hex()


mutation = st.one_of(
    st.tuples(st.just("flip"), st.lists(st.integers(0, 1 << 20), min_size=1, max_size=3)),
    st.tuples(st.just("write"), st.tuples(st.integers(0, 1 << 20), st.integers(1, 255))),
    st.tuples(st.just("insert"), st.tuples(st.integers(0, 1 << 20), st.integers(0, 255))),
    st.tuples(st.just("delete"), st.integers(0, 1 << 20)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 20)),
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=8)),
)


def _apply(blob: bytes, m) -> bytes:
    how, arg = m
    b = bytearray(blob)
    if not b:
        return bytes(b) + b"\x80"
    if how == "flip":
        for i in arg:
            i %= len(b) * 8
            b[i // 8] ^= 1 << (i % 8)
    elif how == "write":
        i = arg[0] % len(b)
        b[i] = (b[i] + arg[1]) % 256
    elif how == "insert":
        b.insert(arg[0] % (len(b) + 1), arg[1])
    elif how == "delete":
        del b[arg % len(b)]
    elif how == "truncate":
        b = b[: arg % len(b)]
    else:
        b += arg
    return bytes(b)


@FUZZ
@given(which=st.integers(0, 1 << 16), m=mutation)
def test_mutated_honest_blobs_never_decode_wrong(reg, honest, which, m):
    blob, expected = honest[which % len(honest)]
    _never_wrong(reg, _apply(blob, m), expected)


@FUZZ
@given(which=st.integers(0, 1 << 16), header=st.binary(min_size=1, max_size=12), keep=st.integers(0, 12))
def test_hostile_headers_on_honest_bodies_never_decode_wrong(reg, honest, which, header, keep):
    """Any header bytes in front of a real body (or of a cut one)."""
    blob, expected = honest[which % len(honest)]
    if blobfmt.is_legacy(blob):
        return
    body = blob[blobfmt.peek_header(blob).header_size:]
    _never_wrong(reg, header + body[keep:], expected)


@FUZZ
@given(st.binary(max_size=64))
def test_random_bytes_are_typed_errors(reg, data):
    try:
        reg.decode(data)
    except NBMFError:
        pass
    # a random input that decodes is possible only by the 2**-32 luck of a checksum: it must still be a payload


@pytest.mark.parametrize("fmt", [1, 2])
def test_swapped_bodies_never_decode_wrong(reg, honest, fmt):
    """A real body of the same codec under another record's header: the checksum (v2) or CRC (v1) refuses it."""
    mine = [(b, p) for b, p in honest if not blobfmt.is_legacy(b) and blobfmt.peek_header(b).format_version == fmt]
    for (a, pa), (b, _) in zip(mine, mine[1:] + mine[:1]):
        ha, hb = blobfmt.peek_header(a), blobfmt.peek_header(b)
        if (ha.encoder_id, ha.fallback) == (hb.encoder_id, hb.fallback):
            _never_wrong(reg, a[: ha.header_size] + b[hb.header_size:], pa)
