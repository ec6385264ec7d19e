"""nbmf.compat as the memory service uses it: encode -> json.dumps -> a file -> json.loads -> decode.

Lossless gives the payload back exactly; semantic gives the canonical text, whole. Every blob the service ever
stored decodes: envelopes, old stub blobs and the "production" placeholder's (stub blobs with encoder meta).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers.compat_cases import LOSSLESS, SEMANTIC, through_a_file
from helpers.golden import read_index
from nbmf import compat
from nbmf.errors import ArtifactError, CorruptBlobError, FormatError, NBMFError, PayloadError

GOLDEN_LEGACY = Path(__file__).resolve().parents[1] / "golden" / "legacy"


@pytest.mark.parametrize("payload", LOSSLESS, ids=[f"p{i}" for i in range(len(LOSSLESS))])
def test_lossless_round_trip_through_a_json_file(payload, tmp_path):
    blob = compat.encode(payload, fidelity="lossless")
    back = compat.decode(through_a_file(blob, tmp_path))
    assert type(back) is type(payload) and back == payload
    assert json.dumps(back) == json.dumps(payload)  # -0.0 and key order too


@pytest.mark.parametrize("payload, text", SEMANTIC, ids=[f"s{i}" for i in range(len(SEMANTIC))])
def test_semantic_gives_the_whole_canonical_text(payload, text, tmp_path):
    blob = compat.encode(payload)  # semantic is the service's default
    assert blob["fidelity"] == "semantic"
    assert compat.decode(through_a_file(blob, tmp_path)) == text


def test_bytes_round_trip(tmp_path):
    blob = compat.encode(b"\x00\xff raw", fidelity="lossless")
    assert compat.decode(through_a_file(blob, tmp_path)) == b"\x00\xff raw"


def test_encode_returns_the_envelope(tmp_path):
    import nbmf

    blob = compat.encode({"role": "user"}, "lossless")
    assert nbmf.decode(nbmf.from_envelope(blob)) == {"role": "user"}
    assert through_a_file(blob, tmp_path) == blob


def placeholder(blob: dict, version: str, domain: str = "legal") -> dict:
    """An old stub blob as the production placeholder stored it: stub output with its encoder meta."""
    meta = {**blob["meta"], "encoder_version": version, "encoder_domain": domain, "device": "cpu:0",
            "device_type": "cpu"}
    return {**blob, "meta": meta}


OLD = [("lossless", "Book a table.", "Book a table."),
       ("lossless", {"z": [1, None], "a": "é"}, {"z": [1, None], "a": "é"}),
       ("semantic", "  spaced   text\n", "spaced text"),
       ("semantic", {"z": 1, "a": ["é", None]}, '{"a": ["é", null], "z": 1}')]  # the old stub's JSON spelling


@pytest.mark.parametrize("writer", ["stub", "production_placeholder", "placeholder-stub"])
@pytest.mark.parametrize("fidelity, payload, expected", OLD, ids=[f"old{i}" for i in range(len(OLD))])
def test_old_blobs_decode(make_legacy_blob, writer, fidelity, payload, expected, tmp_path):
    blob = make_legacy_blob(payload, fidelity)
    if writer != "stub":
        blob = placeholder(blob, "stub" if writer == "placeholder-stub" else writer)
    stored = through_a_file(blob, tmp_path)
    for decode in (compat.decode, compat.decode_production, compat.ProductionNBMFEncoder(domain="legal").decode):
        assert decode(stored) == expected


def test_golden_legacy_blobs_decode():
    for entry in read_index(GOLDEN_LEGACY):
        blob = json.loads((GOLDEN_LEGACY / entry["file"]).read_text(encoding="utf-8"))
        assert compat.decode(blob) == entry["expected"]["value"], entry["file"]


@pytest.mark.parametrize("bad, error", [
    ({}, FormatError),
    ({"meta": {"fidelity": "lossless"}, "code": "zz", "sig": ""}, CorruptBlobError),
    ({"format": 2, "encoder": "stub"}, FormatError),
    ("{cut", FormatError),
])
def test_bad_blobs_are_typed_errors(bad, error):
    with pytest.raises(error) as e:
        compat.decode(bad)
    assert isinstance(e.value, NBMFError)


def test_tampered_envelope_is_corrupt():
    blob = compat.encode("a record that will be edited", "lossless")
    with pytest.raises(CorruptBlobError):
        compat.decode({**blob, "crc32": f"{int(blob['crc32'], 16) ^ 1:08x}"})


def test_caller_misuse_is_value_or_type_error():
    with pytest.raises(PayloadError):  # a ValueError: the service's stub would have stored it as a list
        compat.encode(("a", "tuple"), "lossless")
    with pytest.raises(ValueError):
        compat.encode("x", fidelity="lossy")
    with pytest.raises(TypeError):
        compat.ProductionNBMFEncoder(domain=None)


# -- domain and model_path -------------------------------------------------------------------------------
@pytest.fixture
def fresh(monkeypatch):
    """compat's per-process encoders, emptied for one test (and restored after it)."""
    monkeypatch.setattr(compat, "_encoders", {})
    monkeypatch.setattr(compat, "_latest", [])
    return compat


def test_domains_get_their_own_encoder_on_the_domains_version(fresh):
    general, legal = fresh.get_production_encoder(), fresh.get_production_encoder("legal")
    assert general is fresh.get_production_encoder("general") and legal is not general
    assert (general.domain, legal.domain) == ("general", "legal")
    # a domain without a version of its own encodes with the registry's current one (per-domain: test_domains.py)
    assert legal.registry is general.registry and legal.version == general.version == general.registry.current
    blob = fresh.encode_production({"k": "v"}, "lossless", domain="legal")
    assert fresh.decode_production(blob) == {"k": "v"}


def neural_envelopes(encoder, payloads) -> list[dict]:
    blobs = [encoder.encode(p, "lossless") for p in payloads]
    assert [encoder.decode(b) for b in blobs] == payloads
    mine = [b for b in blobs if b["encoder"] == "v1" and not b["fallback"]]
    assert mine, "the tiny v1 wrote none of the records"
    return mine


@pytest.mark.parametrize("where", ["model-dir", "artifact-in-model-dir", "artifact-elsewhere"])
def test_model_path_is_honored(fresh, tiny_model_dir, tmp_path, sample_payloads, where):
    path = {"model-dir": tiny_model_dir, "artifact-in-model-dir": tiny_model_dir / "v1"}.get(where)
    if path is None:
        path = tmp_path / "exported"
        shutil.copytree(tiny_model_dir / "v1", path)
    enc = fresh.get_production_encoder("general", str(path))
    assert enc.registry.current == "v1" and enc.model_loaded
    assert enc.registry is fresh.registry_for(path)  # one registry (one loaded model) per path
    blobs = neural_envelopes(enc, sample_payloads[:40])
    assert fresh.decode_production(blobs[0]) == enc.decode(blobs[0])  # decode_production: the encoder given last
    if fresh.registry_for(None).current == "v1":  # the released v1 is another model: it must refuse, never misread
        with pytest.raises(CorruptBlobError):
            fresh.ProductionNBMFEncoder().decode(blobs[0])


@pytest.mark.parametrize("make", [
    lambda d: d / "missing",
    lambda d: (d / "placeholder.json").write_text('{"note": "placeholder model"}') and d / "placeholder.json",
    lambda d: d,  # an empty directory: no artifact, no version, no CURRENT
])
def test_model_path_that_holds_no_model_is_an_artifact_error(fresh, tmp_path, make):
    with pytest.raises(ArtifactError, match="model_path"):
        fresh.ProductionNBMFEncoder(model_path=str(make(tmp_path)))
