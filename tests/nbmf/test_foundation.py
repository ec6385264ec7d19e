"""Blob format, stub and legacy codecs, registry routing and fallbacks, envelope, CLI, import hygiene."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nbmf
from nbmf import blob as blobfmt
from nbmf.blob import Fidelity, Kind
from nbmf.errors import (
    CorruptBlobError,
    FormatError,
    LegacySignatureError,
    NBMFError,
    OutputTooLargeError,
    UnknownVersionError,
)
from nbmf.registry import Registry

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "stub"


@pytest.fixture(scope="module")
def stub_reg():
    return Registry(model_dir=None)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=20)


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(), st.binary(), json_values))
def test_stub_round_trips_any_payload(stub_reg, payload):
    assert stub_reg.decode(stub_reg.encode(payload)) == payload


@pytest.mark.parametrize("payload", ["", "x", b"", b"\x00", "😀 naïve", {"a": "\ud800 lone"}, "\udfff",
                                     json.loads("[" * 200 + "]" * 200), b"\x00\xff" * (1 << 19)])
def test_edge_payloads_round_trip(stub_reg, payload):
    assert stub_reg.decode(stub_reg.encode(payload)) == payload


def test_semantic_fidelity_returns_the_canonical_form(stub_reg):
    assert stub_reg.decode(stub_reg.encode("  A  b\n\tc ", fidelity="semantic")) == "A b c"
    assert stub_reg.decode(stub_reg.encode({"b": 1, "a": [1, 2]}, fidelity="semantic")) == {"a": [1, 2], "b": 1}
    assert stub_reg.inspect(stub_reg.encode("x", fidelity="semantic")).fidelity == Fidelity.SEMANTIC


def test_header_is_seven_bytes_under_16k(stub_reg):
    for n in (128, 1000, 16383):
        h = stub_reg.inspect(stub_reg.encode("a" * n))
        assert h.header_size == 7 and h.original_length == n
    assert stub_reg.inspect(stub_reg.encode("short")).header_size == 6


def test_large_encoder_ids_escape():
    b = blobfmt.pack(encoder_id=300, fidelity=Fidelity.LOSSLESS, kind=Kind.BYTES, original_length=1, body=b"z")
    assert blobfmt.unpack(b)[0].encoder_id == 300


@pytest.fixture(scope="module")
def sample_blob(stub_reg):
    return stub_reg.encode({"role": "user", "content": "Book a table for two at 7pm, please."})


def test_every_bit_flip_is_detected(stub_reg, sample_blob):
    for i in range(len(sample_blob) * 8):
        bad = bytearray(sample_blob)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(NBMFError):
            stub_reg.decode(bytes(bad))


def test_every_byte_replacement_is_detected(stub_reg, sample_blob):
    for i in range(len(sample_blob)):
        for v in (0x00, 0xFF, 0x7B, sample_blob[i] ^ 0x55):
            if v == sample_blob[i]:
                continue
            bad = bytearray(sample_blob)
            bad[i] = v
            with pytest.raises(NBMFError):
                stub_reg.decode(bytes(bad))


def test_truncation_and_appended_garbage_are_detected(stub_reg, sample_blob):
    for n in range(len(sample_blob)):
        with pytest.raises(NBMFError):
            stub_reg.decode(sample_blob[:n])
    for tail in (b"\x00", b"garbage", sample_blob):
        with pytest.raises(CorruptBlobError):
            stub_reg.decode(sample_blob + tail)


def test_unknown_version_names_itself_and_the_held_versions(stub_reg):
    b = blobfmt.pack(encoder_id=9, fidelity=Fidelity.LOSSLESS, kind=Kind.TEXT, original_length=1, body=b"x")
    with pytest.raises(UnknownVersionError, match=r"encoder v9; this registry holds stub"):
        stub_reg.decode(b)


def test_max_output_size_guard(stub_reg):
    b = stub_reg.encode("a" * 5000)
    with pytest.raises(OutputTooLargeError):
        stub_reg.decode(b, max_output_size=4999)
    assert stub_reg.decode(b, max_output_size=5000) == "a" * 5000


def test_envelope_converts_losslessly_both_ways(stub_reg, sample_blob):
    env = nbmf.to_envelope(sample_blob)
    assert json.loads(json.dumps(env)) == env and nbmf.from_envelope(env) == sample_blob
    with pytest.raises(CorruptBlobError):
        nbmf.from_envelope({**env, "length": env["length"] + 1})
    with pytest.raises(FormatError):
        nbmf.from_envelope({k: v for k, v in env.items() if k != "body"})
    with pytest.raises(FormatError):
        nbmf.from_envelope({**env, "body": "not base64!"})


# -- legacy blobs, built exactly as the old stub built them ----------------------------------------
def legacy_lossless(payload) -> dict:
    code = zlib.compress(json.dumps(payload, ensure_ascii=False).encode(), 9).hex()
    sig = hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return {"meta": {"fidelity": "lossless", "type": type(payload).__name__,
                     "length_bytes": len(json.dumps(payload, ensure_ascii=False).encode())}, "code": code, "sig": sig}


def legacy_semantic(payload) -> dict:
    canon = " ".join(payload.split()) if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False, sort_keys=True)
    preview = canon[:2048]
    return {"meta": {"fidelity": "semantic", "type": type(payload).__name__, "preview_length": len(preview)},
            "code": preview.encode().hex(), "sig": hashlib.sha256(canon.encode()).hexdigest()}


@pytest.mark.parametrize("payload", ["hello  world", {"role": "user", "content": "héllo 😀"}, [1, 2, {"a": None}]])
@pytest.mark.parametrize("form", ["dict", "json-text", "json-bytes"])
def test_legacy_lossless_blobs_decode_exactly(stub_reg, payload, form):
    blob = legacy_lossless(payload)
    blob = {"dict": blob, "json-text": json.dumps(blob), "json-bytes": json.dumps(blob).encode()}[form]
    res = stub_reg.decode_result(blob)
    assert res.payload == payload and res.legacy and not res.truncated


def test_legacy_semantic_blobs_decode_to_their_preview(stub_reg):
    short = stub_reg.decode_result(legacy_semantic("  a   b \n c "))
    assert short.payload == "a b c" and not short.truncated and short.fidelity == Fidelity.SEMANTIC
    long_text = "word " * 1000
    res = stub_reg.decode_result(legacy_semantic(long_text))
    assert res.truncated and res.payload == " ".join(long_text.split())[:2048]
    obj = {"z": 1, "a": "x"}
    assert stub_reg.decode(legacy_semantic(obj)) == json.dumps(obj, sort_keys=True)


def test_tampered_legacy_blobs_are_errors(stub_reg):
    blob = legacy_lossless({"a": 1})
    with pytest.raises(LegacySignatureError):
        stub_reg.decode({**blob, "sig": "0" * 64})
    with pytest.raises(CorruptBlobError):
        stub_reg.decode({**blob, "code": blob["code"][:-4]})
    other = legacy_lossless({"a": 2})
    with pytest.raises(LegacySignatureError):
        stub_reg.decode({**blob, "code": other["code"]})
    with pytest.raises(LegacySignatureError):
        stub_reg.decode({**legacy_semantic("abc"), "code": b"abd".hex()})
    with pytest.raises(FormatError):
        stub_reg.decode({"meta": {}, "code": "00"})


# -- golden stub blobs: the v1 layout must never drift --------------------------------------------
GOLDEN_CASES = {"text": "Remember: the user prefers metric units.", "json": {"role": "user", "content": "héllo 😀"},
                "bytes": b"\x00\x01binary\xff", "semantic": "  two   spaces  ", "empty": ""}


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_golden_stub_blobs(stub_reg, name):
    payload = GOLDEN_CASES[name]
    fidelity = "semantic" if name == "semantic" else "lossless"
    path = GOLDEN / f"{name}.nbmf"
    if os.environ.get("NBMF_REGENERATE") == "1":
        GOLDEN.mkdir(parents=True, exist_ok=True)
        path.write_bytes(stub_reg.encode(payload, fidelity=fidelity))
    blob = path.read_bytes()
    assert stub_reg.encode(payload, fidelity=fidelity) == blob
    want = " ".join(payload.split()) if fidelity == "semantic" else payload
    assert stub_reg.decode(blob) == want


# -- registry fallbacks with a real tiny model (failures injected) --------------------------------
@pytest.fixture(scope="module")
def neural_reg(tmp_path_factory):
    from nbmf.testing import tiny_artifact

    d = tmp_path_factory.mktemp("registry")
    tiny_artifact(d / "v1", steps=20)
    (d / "CURRENT").write_text("v1\n")
    return Registry(d)


def test_neural_registry_routes_and_counts(neural_reg):
    recs = ['{"role": "user", "content": "hello there"}' * 3, {"name": "x", "version": "1.0", "summary": "a package"}]
    blobs = neural_reg.encode_many(recs)
    assert [nbmf.inspect(b).version for b in blobs] == ["v1", "v1"]
    assert [r.payload for r in neural_reg.decode_many(blobs)] == recs
    assert neural_reg.stats.encodes["v1"] >= 2


def test_model_error_falls_back_to_stub(neural_reg, monkeypatch):
    codec = neural_reg.codec("v1")
    monkeypatch.setattr(codec, "encode_many", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("model died")))
    before = neural_reg.stats.fallbacks["v1:error"]
    b = neural_reg.encode("some text that the model would have coded")
    assert nbmf.inspect(b).version == "stub" and neural_reg.decode(b) == "some text that the model would have coded"
    assert neural_reg.stats.fallbacks["v1:error"] == before + 1


def test_verification_mismatch_falls_back_to_stub(neural_reg, monkeypatch):
    codec = neural_reg.codec("v1")
    real = codec.tokenizer.decode
    monkeypatch.setattr(codec.tokenizer, "decode", lambda ids: real(ids) + b"!")  # decoding no longer gives the record back
    before = neural_reg.stats.fallbacks["v1:mismatch"]
    b = neural_reg.encode("the verify step must catch this")
    monkeypatch.setattr(codec.tokenizer, "decode", real)
    assert nbmf.inspect(b).version == "stub" and neural_reg.decode(b) == "the verify step must catch this"
    assert neural_reg.stats.fallbacks["v1:mismatch"] == before + 1


def test_incompressible_input_falls_back_as_larger(neural_reg):
    payload = os.urandom(64)
    b = neural_reg.encode(payload)
    assert nbmf.inspect(b).version == "stub" and neural_reg.decode(b) == payload
    assert neural_reg.stats.fallbacks["v1:larger"] >= 1


# -- process-level checks -------------------------------------------------------------------------
def test_decode_path_imports_neither_ray_nor_torch():
    code = ("import sys, nbmf; b = nbmf.encode('x'); assert nbmf.decode(b) == 'x'; "
            "bad = [m for m in ('ray', 'torch') if m in sys.modules]; assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


def test_cli_encode_pipe_decode_and_inspect(tmp_path):
    src = tmp_path / "note.txt"
    src.write_text("Grüße 😀 — the user prefers metric units.\n", encoding="utf-8")
    nb = [sys.executable, "-m", "nbmf"]
    enc = subprocess.run(nb + ["encode", str(src)], capture_output=True, timeout=300, check=True).stdout
    dec = subprocess.run(nb + ["decode"], input=enc, capture_output=True, timeout=300, check=True).stdout
    assert dec == src.read_bytes()
    info = json.loads(subprocess.run(nb + ["inspect", "--json"], input=enc, capture_output=True, timeout=300, check=True).stdout)
    assert info["kind"] == "text" and info["length"] == len(src.read_bytes())
    env = subprocess.run(nb + ["encode", "--envelope", "--version", "stub", str(src)], capture_output=True, timeout=300, check=True).stdout
    assert subprocess.run(nb + ["decode"], input=env, capture_output=True, timeout=300, check=True).stdout == src.read_bytes()
    legacy = json.dumps(legacy_lossless({"a": "b"})).encode()
    assert json.loads(subprocess.run(nb + ["decode"], input=legacy, capture_output=True, timeout=300, check=True).stdout) == {"a": "b"}
    bad = subprocess.run(nb + ["decode"], input=enc[:-1], capture_output=True, timeout=300)
    assert bad.returncode == 1 and b"CorruptBlobError" in bad.stderr
