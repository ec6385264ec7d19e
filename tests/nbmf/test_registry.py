"""Version routing, round trips, damage, limits and the verified neural encode with its stub fallbacks.

Neural tests use a real tiny model (tests/conftest.py: tiny_model_dir); failures are injected by wrapping
the loaded codec, never by replacing the code under test.
"""
from __future__ import annotations

import copy
import json
import os
import random
import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nbmf
from nbmf import registry as registry_mod
from nbmf.blob import Fidelity, Kind, pack
from nbmf.errors import ArtifactError, CorruptBlobError, NBMFError, OutputTooLargeError, UnknownVersionError
from nbmf.payload import canonical, from_raw, to_raw
from nbmf.registry import Registry

lone_surrogates = st.integers(0xD800, 0xDFFF).map(chr)
texts = st.lists(st.one_of(st.characters(), lone_surrogates, st.sampled_from(["😀", "é", "\n", "  "])),
                 max_size=40).map("".join)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | texts,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(texts, c, max_size=4), max_leaves=25)
payloads = st.one_of(texts, st.binary(max_size=300), json_values)


def deep(n: int):
    value = "leaf"
    for i in range(n):
        value = [value] if i % 2 else {"k": value}
    return value


EDGE_PAYLOADS = {
    "empty-text": "", "empty-bytes": b"", "empty-dict": {}, "one-byte": b"\x00", "one-char": "x",
    "emoji": "😀👩‍👩‍👧 naïve café", "lone-surrogate-text": "\ud800 and \udfff",
    "lone-surrogates-in-json-escapes": json.loads('{"cut": "\\ud83d", "x": ["\\udc00"]}'),
    "deep-json": deep(300), "random-bytes": random.Random(0).randbytes(4096),
    "1MB-text": "memory record " * 74899, "1MB-bytes": random.Random(1).randbytes(1 << 20),
}


# -- stub-only registry --------------------------------------------------------------------------
def test_stub_only_registry(stub_registry):
    assert stub_registry.versions() == ["stub"] and stub_registry.current == "stub"


@settings(max_examples=200, deadline=None)
@given(payloads)
def test_lossless_round_trip(stub_registry, payload):
    blob = stub_registry.encode(payload)
    assert stub_registry.decode(blob) == payload
    res = stub_registry.decode_result(blob)
    assert (res.fidelity, res.version, res.legacy, res.truncated) == (Fidelity.LOSSLESS, "stub", False, False)


@settings(max_examples=150, deadline=None)
@given(payloads)
def test_semantic_round_trip_gives_the_canonical_form(stub_registry, payload):
    raw, kind = to_raw(payload)
    blob = stub_registry.encode(payload, fidelity="semantic")
    assert stub_registry.decode(blob) == from_raw(canonical(raw, kind), kind)
    assert stub_registry.inspect(blob).fidelity == Fidelity.SEMANTIC
    again = stub_registry.encode(stub_registry.decode(blob), fidelity="semantic")
    assert again == blob  # the canonical form is a fixed point


@pytest.mark.parametrize("name", sorted(EDGE_PAYLOADS))
def test_edge_payloads_round_trip(stub_registry, name):
    payload = EDGE_PAYLOADS[name]
    blob = stub_registry.encode(payload)
    assert stub_registry.decode(blob) == payload
    assert stub_registry.inspect(blob).original_length == len(to_raw(payload)[0])


def test_sample_records_round_trip_both_fidelities(stub_registry, sample_payloads):
    assert [stub_registry.decode(b) for b in stub_registry.encode_many(sample_payloads)] == sample_payloads
    semantic = stub_registry.encode_many(sample_payloads, fidelity="semantic")
    for p, b in zip(sample_payloads, semantic):
        raw, kind = to_raw(p)
        assert stub_registry.decode(b) == from_raw(canonical(raw, kind), kind)


def test_explicit_kind(stub_registry):
    blob = stub_registry.encode("plain", kind="json")
    assert stub_registry.inspect(blob).kind == Kind.JSON and stub_registry.decode(blob) == "plain"
    with pytest.raises(TypeError):
        stub_registry.encode("abc", kind=Kind.BYTES)


def test_encode_many_equals_encode(stub_registry, sample_payloads):
    assert stub_registry.encode_many(sample_payloads[:20]) == [stub_registry.encode(p) for p in sample_payloads[:20]]


@pytest.mark.parametrize("fidelity", ["lossy", "LOSSLESSish", 2])
def test_bad_fidelity_is_value_error(stub_registry, fidelity):
    with pytest.raises(ValueError):
        stub_registry.encode("x", fidelity=fidelity)


def test_bad_version_name_is_value_error(stub_registry):
    with pytest.raises(ValueError, match="stub"):
        stub_registry.encode("x", version="latest")


# -- damage through the registry -----------------------------------------------------------------
@pytest.fixture(scope="module")
def damage_samples(sample_payloads):
    reg = Registry(model_dir=None)
    by_type = {}
    for p in sample_payloads:
        by_type.setdefault(type(p).__name__, p)
    picked = list(by_type.values()) + ["", b"\x01"]
    return [(reg.encode(p, fidelity=f), p) for p in picked for f in ("lossless", "semantic")][:6]


def _never_decodes(reg, bad: bytes) -> None:
    with pytest.raises(NBMFError):
        reg.decode(bad)


def _never_wrong(reg, bad: bytes, good: bytes) -> None:
    """A damaged blob raises NBMFError or, when the damage hit bits its codec ignores (a deflate stream's
    padding, say), decodes to exactly what the undamaged blob holds: never to anything else."""
    try:
        got = reg.decode_result(bad)
    except NBMFError:
        return
    want = reg.decode_result(good)
    assert (got.payload, type(got.payload), got.kind, got.fidelity) == (
        want.payload, type(want.payload), want.kind, want.fidelity), bad.hex()


def test_every_bit_flip_of_sample_blobs_raises(stub_registry, damage_samples):
    for blob, _ in damage_samples:
        for i in range(len(blob) * 8):
            bad = bytearray(blob)
            bad[i // 8] ^= 1 << (i % 8)
            _never_wrong(stub_registry, bytes(bad), blob)


def test_every_byte_replacement_of_sample_blobs_raises(stub_registry, damage_samples):
    for blob, _ in damage_samples:
        for i in range(len(blob)):
            for v in {0x00, 0xFF, 0x7B, blob[i] ^ 0x80, (blob[i] + 1) % 256} - {blob[i]}:
                bad = bytearray(blob)
                bad[i] = v
                _never_wrong(stub_registry, bytes(bad), blob)


def test_every_truncation_and_appended_garbage_raises(stub_registry, damage_samples):
    for blob, _ in damage_samples:
        for n in range(len(blob)):
            _never_decodes(stub_registry, blob[:n])
        for tail in (b"\x00", b"\n", b"garbage", blob):
            with pytest.raises(CorruptBlobError):
                stub_registry.decode(blob + tail)


def test_valid_checksum_over_a_wrong_body_is_still_caught(stub_registry):
    """Damage that happened before the CRC was computed: the stub's length check catches it."""
    raw = b"a record of forty bytes, more or less..."
    import zlib

    for length in (len(raw) - 1, len(raw) + 1):
        blob = pack(encoder_id=0, fidelity=Fidelity.LOSSLESS, kind=Kind.BYTES, original_length=length,
                    body=zlib.compress(raw, 9))
        with pytest.raises(CorruptBlobError):
            stub_registry.decode(blob)
    text = pack(encoder_id=0, fidelity=Fidelity.LOSSLESS, kind=Kind.TEXT, original_length=2, body=zlib.compress(b"\xff\xfe"))
    with pytest.raises(CorruptBlobError):
        stub_registry.decode(text)


# -- versions and limits -------------------------------------------------------------------------
@pytest.mark.parametrize("encoder_id", [1, 6, 7, 9, 300])
def test_unknown_version_names_itself_and_the_held_versions(stub_registry, encoder_id):
    blob = pack(encoder_id=encoder_id, fidelity=Fidelity.LOSSLESS, kind=Kind.TEXT, original_length=1, body=b"x")
    with pytest.raises(UnknownVersionError, match=rf"encoder v{encoder_id}; this registry holds stub\b"):
        stub_registry.decode(blob)


def test_encode_with_a_version_not_held(stub_registry):
    with pytest.raises(UnknownVersionError, match="v9"):
        stub_registry.encode("x", version="v9")


def test_max_output_size_is_checked_before_decoding(stub_registry):
    blob = stub_registry.encode("a" * 5000)
    with pytest.raises(OutputTooLargeError, match="max_output_size"):
        stub_registry.decode(blob, max_output_size=4999)
    assert stub_registry.decode(blob, max_output_size=5000) == "a" * 5000
    # a header claiming 1 TiB over a body that is not even zlib: refused on the header alone
    bomb = pack(encoder_id=0, fidelity=Fidelity.LOSSLESS, kind=Kind.BYTES, original_length=1 << 40, body=b"junk")
    with pytest.raises(OutputTooLargeError):
        stub_registry.decode(bomb)
    with pytest.raises(OutputTooLargeError):
        nbmf.decode(bomb)


def test_current_comes_from_the_model_dir(tmp_path):
    assert Registry(tmp_path).current == "stub"  # no CURRENT, no versions
    (tmp_path / "CURRENT").write_text("v3\n")
    with pytest.raises(UnknownVersionError, match="v3"):
        Registry(tmp_path)


def test_default_registry_reads_nbmf_model_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NBMF_MODEL_DIR", str(tmp_path))
    assert registry_mod.default_model_dir() == tmp_path
    assert Registry.default().versions() == ["stub"]
    monkeypatch.delenv("NBMF_MODEL_DIR")
    assert registry_mod.default_model_dir() == registry_mod.Path(nbmf.__file__).resolve().parents[1] / "models"


def test_module_level_api_uses_one_lazy_default_registry():
    assert nbmf.default_registry() is nbmf.default_registry()
    blob = nbmf.encode({"role": "user", "content": "metric units"})
    assert nbmf.decode(blob) == {"role": "user", "content": "metric units"}
    assert nbmf.inspect(blob).kind == Kind.JSON and nbmf.decode_result(blob).kind == Kind.JSON


def test_stats_count_encodes_and_decodes():
    reg = Registry(model_dir=None)
    blobs = reg.encode_many(["a", "b"]) + [reg.encode(b"c")]
    reg.decode_many(blobs)
    assert reg.stats.as_dict() == {"encodes": {"stub": 3}, "fallbacks": {}, "decodes": {"stub": 3}}


# -- neural versions (real tiny model) -----------------------------------------------------------
class WrappedCodec:
    """Delegates to a loaded codec; a test overrides one method to inject a failure."""

    def __init__(self, inner):
        self.inner, self.name, self.encoder_id = inner, inner.name, inner.encoder_id
        self.fingerprint = inner.fingerprint

    def encode_many(self, items, fidelity=0, verify=False):
        return self.inner.encode_many(items, fidelity=fidelity, verify=verify)

    def decode_many(self, items, fidelity=0):
        return self.inner.decode_many(items, fidelity=fidelity)

    def encode_raw(self, raw, kind, fidelity=0):
        return self.encode_many([(raw, kind)], fidelity)[0]

    def decode_raw(self, body, kind, original_length, fidelity=0):
        return self.decode_many([(body, kind, original_length)], fidelity)[0]


@pytest.fixture
def neural_registry(tiny_model_dir, tiny_codec):
    """A fresh registry (fresh stats) over the tiny model dir, with the session's loaded v1."""
    reg = Registry(tiny_model_dir)
    reg.register(tiny_codec)
    return reg


@pytest.fixture
def records(sample_payloads):
    return sample_payloads[:40]


def test_neural_registry_holds_v1_as_current(tiny_model_dir):
    reg = Registry(tiny_model_dir)
    assert reg.versions() == ["stub", "v1"] and reg.current == "v1"
    assert reg.codec("v1").name == "v1" and reg.codec(1) is reg.codec("v1")  # loaded lazily, once


def test_versions_load_lazily(tiny_model_dir, tmp_path):
    """A broken artifact does not stop stub decoding; it is an ArtifactError only when v1 is needed."""
    d = tmp_path / "models"
    shutil.copytree(tiny_model_dir, d)
    weights = next(p for p in (d / "v1").iterdir() if p.suffix == ".safetensors")
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    reg = Registry(d)
    assert reg.decode(Registry(None).encode("stub blob")) == "stub blob"
    with pytest.raises(ArtifactError):
        reg.codec("v1")


def test_neural_round_trip_and_counts(neural_registry, records):
    blobs = neural_registry.encode_many(records)
    versions = [nbmf.inspect(b).version for b in blobs]
    assert versions.count("v1") >= len(records) // 4, versions
    assert [r.payload for r in neural_registry.decode_many(blobs)] == records
    assert [neural_registry.decode(b) for b in blobs] == records
    stats = neural_registry.stats
    assert stats.encodes["v1"] == versions.count("v1") and stats.encodes["stub"] == versions.count("stub")
    assert sum(stats.fallbacks.values()) == versions.count("stub")  # every stub blob is a counted fallback
    assert stats.decodes["v1"] == 2 * versions.count("v1")


def test_neural_semantic_fidelity(neural_registry, records):
    blobs = neural_registry.encode_many(records[:12], fidelity="semantic")
    for p, b in zip(records[:12], blobs):
        raw, kind = to_raw(p)
        assert neural_registry.decode(b) == from_raw(canonical(raw, kind), kind)
        assert nbmf.inspect(b).fidelity == Fidelity.SEMANTIC


def test_mixed_batch_decodes_in_order(neural_registry, records, make_legacy_blob):
    blobs = [neural_registry.encode(records[0]), Registry(None).encode(records[1]), make_legacy_blob(records[2]),
             neural_registry.encode(records[3], fidelity="semantic"), json.dumps(make_legacy_blob(records[4]))]
    got = [r.payload for r in neural_registry.decode_many(blobs)]
    assert got[:3] == records[:3] and got[4] == records[4]


def test_explicit_stub_version_is_not_a_fallback(neural_registry, records):
    blob = neural_registry.encode(records[0], version="stub")
    assert nbmf.inspect(blob).version == "stub" and not neural_registry.stats.fallbacks


def test_unknown_version_lists_neural_versions(neural_registry):
    blob = pack(encoder_id=9, fidelity=Fidelity.LOSSLESS, kind=Kind.TEXT, original_length=1, body=b"x")
    with pytest.raises(UnknownVersionError, match="encoder v9; this registry holds stub, v1"):
        neural_registry.decode(blob)


def test_corrupted_neural_blob_raises(neural_registry, records):
    blob = next(b for b in neural_registry.encode_many(records) if nbmf.inspect(b).version == "v1")
    for i in range(len(blob) * 8):
        bad = bytearray(blob)
        bad[i // 8] ^= 1 << (i % 8)
        _never_wrong(neural_registry, bytes(bad), blob)
    for n in range(len(blob)):
        _never_decodes(neural_registry, blob[:n])


def test_model_error_falls_back_to_stub(neural_registry, tiny_codec, records):
    class Broken(WrappedCodec):
        def encode_many(self, items, fidelity=0, verify=False):
            raise RuntimeError("model crashed")

    neural_registry.register(Broken(tiny_codec))
    blobs = neural_registry.encode_many(records[:5])
    assert all(nbmf.inspect(b).version == "stub" for b in blobs)
    assert [neural_registry.decode(b) for b in blobs] == records[:5]
    assert neural_registry.stats.fallbacks == {"v1:error": 5}
    assert neural_registry.stats.encodes == {"stub": 5}


def test_verification_mismatch_falls_back_to_stub(neural_registry, tiny_codec, records):
    """The wrapped codec's detokenizer no longer gives the record back: its blobs must never be written."""
    class Tok:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def decode(self, ids):
            return self.inner.decode(ids) + b"!"

    lying = copy.copy(tiny_codec)
    lying.tokenizer = Tok(tiny_codec.tokenizer)
    neural_registry.register(lying)
    text = "Please remember that the user prefers metric units. " * 4
    blob = neural_registry.encode(text)
    assert nbmf.inspect(blob).version == "stub" and neural_registry.decode(blob) == text
    assert neural_registry.stats.fallbacks == {"v1:mismatch": 1}


def test_incompressible_records_fall_back_as_larger(neural_registry, records):
    noise = os.urandom(200)
    blobs = neural_registry.encode_many([noise, records[0]])
    assert nbmf.inspect(blobs[0]).version == "stub" and neural_registry.decode(blobs[0]) == noise
    assert neural_registry.stats.fallbacks["v1:larger"] >= 1
    assert neural_registry.decode(blobs[1]) == records[0]


def test_codec_whose_decoder_disagrees_never_gets_blobs_written(neural_registry, tiny_codec, records):
    class Drifting(WrappedCodec):
        def decode_many(self, items, fidelity=0):
            return [raw.swapcase() for raw in self.inner.decode_many(items, fidelity=fidelity)]

    texts = [r for r in records if isinstance(r, str) and r.swapcase() != r]
    coded = [t for t, b in zip(texts, neural_registry.encode_many(texts)) if nbmf.inspect(b).version == "v1"]
    assert coded, "the tiny model codes some sample documents"
    neural_registry.register(Drifting(tiny_codec))
    blob = neural_registry.encode(coded[0])
    assert nbmf.inspect(blob).version == "stub" and neural_registry.decode(blob) == coded[0]
    assert neural_registry.stats.fallbacks["v1:mismatch"] == 1


def test_full_verification_catches_a_self_verifying_codec_that_is_wrong(tiny_model_dir, tiny_codec, records):
    """verify="codec" trusts codecs that declare self_verifying; verify="full" decodes every body anyway."""
    class LyingSelfVerifying(WrappedCodec):
        self_verifying = True

        def encode_many(self, items, fidelity=0, verify=False):
            bodies = self.inner.encode_many(items, fidelity=fidelity, verify=verify)
            return [None if b is None else bytes(x ^ 0xA5 for x in b) for b in bodies]  # claims verified

    texts = [r for r in records if isinstance(r, str)]
    trusting, full = Registry(tiny_model_dir), Registry(tiny_model_dir, verify="full")
    for reg in (trusting, full):
        reg.register(LyingSelfVerifying(tiny_codec))
    full_blobs = full.encode_many(texts)
    assert [full.decode(b) for b in full_blobs] == texts  # whatever was written reads back exactly
    assert full.stats.fallbacks["v1:mismatch"] >= 1
    trusted = [nbmf.inspect(b).version for b in trusting.encode_many(texts)]
    assert trusted.count("v1") > [nbmf.inspect(b).version for b in full_blobs].count("v1")


def test_verify_mode_is_checked():
    with pytest.raises(ValueError, match="full"):
        Registry(None, verify="never")


def test_current_model_that_cannot_load_falls_back_to_stub_but_a_named_one_raises(tiny_model_dir, tmp_path):
    import shutil

    from nbmf.errors import ArtifactError

    d = tmp_path / "models"
    shutil.copytree(tiny_model_dir, d)
    weights = d / "v1" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")  # damaged after registration
    reg = Registry(d)
    blob = reg.encode("writes must go on")
    assert nbmf.inspect(blob).version == "stub" and reg.decode(blob) == "writes must go on"
    assert reg.stats.fallbacks["v1:unavailable"] == 1
    with pytest.raises(ArtifactError):
        reg.encode("x", version="v1")


def test_a_version_directory_must_hold_that_version(tmp_path, tiny_model_dir):
    """A v3/ whose manifest says v1 would encode as v1: the registry refuses to load it."""
    import shutil

    from nbmf.errors import ArtifactError

    shutil.copytree(tiny_model_dir / "v1", tmp_path / "v3")
    reg = Registry(tmp_path, current="v3")
    with pytest.raises(ArtifactError, match="v3"):
        reg.codec("v3")
