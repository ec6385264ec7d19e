"""The match model (nbmf.runtime.match): exact round trips, batch/thread/process invariance, v1 untouched,
tampered or hostile match tables and bodies refused with typed errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.artifacts import assert_device_matches_kernel, forged_match, sample_items
from nbmf.artifact import MATCH, attach_match, fingerprint, load_artifact, read_manifest
from nbmf.blob import unpack
from nbmf.codecs.neural import NeuralCodec, load_codec
from nbmf.errors import ArtifactError, CorruptBlobError, NBMFError
from nbmf.registry import Registry
from nbmf.runtime import layouts, match

ROOT = Path(__file__).resolve().parents[2]
V1 = ROOT / "models" / "v1"
V2 = ROOT / "models" / "v2"  # the released match version (python -m nbmf.export match ...), when registered
VAL = ROOT / "data" / "sample" / "val.jsonl"
TRAIN = ROOT / "data" / "sample" / "train.jsonl"


def repetitive_records() -> list[bytes]:
    rows = [{"name": f"pkg-{i % 7}", "version": f"1.{i % 3}.0", "license": "MIT", "tags": ["cli", "json"],
             "downloads": 1000 + i} for i in range(40)]
    log = "".join(f"2026-11-24 10:{i:02d}:00 INFO worker-{i % 4} heartbeat ok (queue depth {i % 5})\n"
                  for i in range(60))
    return [json.dumps(rows).encode(), log.encode(), b"abc " * 300, ("Grüße 😀 " * 80).encode()]


@pytest.fixture(scope="module")
def match_models_dir(tmp_path_factory):
    """A model directory holding v1 and a match version fitted on the sample training records (export path)."""
    from nbmf.export import fit_match, register_match_version

    d = tmp_path_factory.mktemp("models")
    shutil.copytree(V1, d / "v1")
    (d / "CURRENT").write_text("v1\n")
    items = sample_items(TRAIN, limit=160)
    m, about = fit_match(load_codec(V1, threads=1), items, ks=(2,))
    register_match_version(d / "v1", d, m, about, command="test fixture")
    return d


@pytest.fixture(scope="module")
def mcodec(match_models_dir):
    return load_codec(match_models_dir / "v2", threads=1)


@pytest.fixture(scope="module")
def v1codec():
    return load_codec(V1, threads=1)


def test_the_registered_version_is_v1_with_a_match_model(match_models_dir, mcodec, v1codec):
    manifest = read_manifest(match_models_dir / "v2")
    v1 = read_manifest(V1)
    assert manifest["encoder_id"] == 2 and MATCH in manifest["files"] and manifest["match"]["file"] == MATCH
    assert {k: manifest["files"][k] for k in v1["files"]} == v1["files"]  # same weights, tokenizer, dictionary
    assert manifest["training"]["commands"][-1] == "test fixture"
    assert "body" not in v1 and manifest["body"] == layouts.BODY_LAYOUT  # a new version: the current body layout
    assert fingerprint(manifest) != fingerprint(v1)  # another model: its blobs bind another fingerprint
    assert mcodec.model.match.conf[0] == 1 and v1codec.model.match.conf[0] == 0
    assert (match_models_dir / "CURRENT").read_text().strip() == "v1"  # registering does not make it current
    with pytest.raises(ArtifactError, match="never replaced"):
        attach_match(match_models_dir / "v2", match.to_json(mcodec.model.match), {})


def test_a_zero_table_changes_no_byte_of_v1(v1codec):
    """With every hit probability 0 the match model predicts but never boosts: v1's bodies, byte for byte."""
    items = [(r, 0) for r in repetitive_records()] + sample_items(VAL, limit=20)
    zero = match.make(2, 12, 255, np.zeros((match.LEN_BUCKETS, match.PROB_BUCKETS), np.int64))
    _, cfg, im, tok = load_artifact(V1)
    im.match = zero
    assert NeuralCodec("v1", cfg, im, tok, threads=1).encode_many(items) == v1codec.encode_many(items)


def test_repetitive_records_round_trip_and_shrink(mcodec, v1codec):
    items = [(r, 1) for r in repetitive_records()]
    bodies = mcodec.encode_many(items, verify=True)
    assert all(b is not None for b in bodies)
    assert mcodec.decode_many([(b, k, len(r)) for b, (r, k) in zip(bodies, items)]) == [r for r, _ in items]
    plain = v1codec.encode_many(items)
    assert sum(map(len, bodies)) < 0.8 * sum(map(len, plain))  # long-range repeats are what the match model codes
    for (raw, kind), body in zip(items, bodies):  # the coder spends what the mixed tables say, within 1% + 8 bytes
        assert abs(len(body) - mcodec.cross_entropy_bits(raw, kind) / 8) < 0.01 * len(body) + 8


def test_val_records_round_trip_identically_in_batch_one_by_one_and_threads(match_models_dir, mcodec):
    items = sample_items(VAL, limit=40)
    bodies = mcodec.encode_many(items)
    assert [mcodec.encode_raw(r, k) for r, k in items[:8]] == bodies[:8]
    threaded = load_codec(match_models_dir / "v2", threads=3)
    assert threaded.encode_many(items) == bodies
    jobs = [(b, k, len(r)) for b, (r, k) in zip(bodies, items)]
    want = [r for r, _ in items]
    assert mcodec.decode_many(jobs) == want and threaded.decode_many(jobs) == want
    assert [mcodec.decode_raw(*j) for j in jobs[:8]] == want[:8]


@pytest.mark.parametrize("enc,dec", [((1, 1), (7, 2)), ((16, 2), (1, 1))])
def test_match_bodies_decode_in_another_process_with_other_batch_and_threads(match_models_dir, enc, dec):
    from helpers.artifacts import cross_process

    bodies = cross_process(match_models_dir / "v2", VAL, "encode", *enc, limit=30)
    assert cross_process(match_models_dir / "v2", VAL, "decode", *dec, limit=30, stdin=bodies).startswith("ok 30")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(unit=st.binary(min_size=1, max_size=40) | st.text(min_size=1, max_size=30).map(str.encode),
       times=st.integers(1, 40), noise=st.binary(max_size=30))
def test_round_trips_over_repeats_with_noise(mcodec, unit, times, noise):
    raw = unit * times + noise + unit * (times // 2)
    body = mcodec.encode_raw(raw, 0)
    assert mcodec.decode_raw(body, 0, len(raw)) == raw


def test_a_tampered_match_table_is_refused_at_load(match_models_dir, tmp_path):
    bad = tmp_path / "v2"
    shutil.copytree(match_models_dir / "v2", bad)
    (bad / MATCH).write_bytes((bad / MATCH).read_bytes().replace(b'"k": ', b'"k":  '))  # one byte more
    with pytest.raises(ArtifactError, match="modified or corrupted"):
        load_codec(bad)


@pytest.mark.parametrize("edit,why", [
    (lambda d: d.replace(b'"k": 2', b'"k": 9'), "k is 9"),
    (lambda d: d.replace(b"[0, ", b"[32705, ", 1), "not an integer in"),
    (lambda d: d.replace(b'"table_bits": 12', b'"table_bits": 40'), "table_bits is 40"),
    (lambda d: d.replace(b'"max_len": 255', b'"max_len": 1.5'), "not an integer"),
    (lambda d: d[: len(d) // 2], "not valid JSON"),
    (lambda d: b"[]", "not a nbmf-match/1 object"),
])
def test_a_rehashed_match_table_the_kernels_cannot_run_is_refused(match_models_dir, tmp_path, edit, why):
    """The hash is no defence against someone who rewrites the manifest: the table's contents are checked too."""
    with pytest.raises(ArtifactError, match=why):
        load_codec(forged_match(match_models_dir / "v2", tmp_path / "v2", edit))


@pytest.mark.parametrize("host_threads", [0, 2])
def test_the_device_runtime_runs_a_match_model_with_the_kernel_bytes(mcodec, host_threads):
    """The torch path (what a GPU runs): the device computes each table, the host the match model's recursion
    (kernels.match_predictions/matched_intervals, match_before_step/match_after_step): the kernel's bytes."""
    pytest.importorskip("torch")
    items = [(raw, 1) for raw in repetitive_records()] + sample_items(VAL, limit=8)
    assert_device_matches_kernel(mcodec, items, host_threads=host_threads)


def test_a_device_from_the_environment_runs_a_match_model(match_models_dir, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setenv("NBMF_DEVICE", "cpu")
    codec = load_codec(match_models_dir / "v2")
    assert codec.device == "cpu" and codec.runtime is not codec.model


def test_hostile_bodies_give_typed_errors_never_wrong_payloads(match_models_dir):
    reg = Registry(match_models_dir)
    payload = {"rows": [{"k": "value", "n": i % 3} for i in range(30)]}
    blob = reg.encode(payload, version="v2")
    assert unpack(blob)[0].encoder_id == 2 and reg.decode(blob) == payload
    rng = np.random.default_rng(0)
    for _ in range(60):
        b = bytearray(blob)
        i = int(rng.integers(0, len(b)))
        b[i] ^= 1 << int(rng.integers(0, 8))
        try:
            out = reg.decode(bytes(b))
        except NBMFError:
            continue
        assert out == payload
    with pytest.raises(CorruptBlobError):
        reg.codec("v2").decode_raw(bytes(rng.integers(0, 256, 40, dtype=np.uint8)), 1, 10**6)


def test_a_match_model_leaves_the_decode_bomb_bound_where_it_was(mcodec, v1codec):
    """Hit probabilities stop at HIT_MAX, below the neural tables' own largest: a body holds no more tokens."""
    assert int(mcodec.model.match.hit.max()) <= match.HIT_MAX
    assert [mcodec.max_length(n) for n in (1, 9, 64, 4096)] == [v1codec.max_length(n) for n in (1, 9, 64, 4096)]


@pytest.mark.parametrize("version", ["v2", "v3", "v4", "v5"])
def test_the_released_match_versions_write_their_golden_blobs(version):
    """tests/golden/match_vN pins models/vN's bytes (v2: match model; v3: and its temperature; v4: the longer-trained
    network with both; v5: trained longer still, body layout 2; NBMF_REGENERATE=1 rewrites them, on purpose only):
    every blob decodes to its payload and vN writes it again byte for byte."""
    import os

    from helpers.golden import as_json, from_json, read_index, write_index

    GOLDEN = ROOT / "tests" / "golden" / f"match_{version}"
    reg = Registry(ROOT / "models")
    if os.environ.get("NBMF_REGENERATE") == "1":
        payloads = [r.decode() for r in repetitive_records()] + [{"rows": [{"k": "value", "n": i % 3}
                                                                           for i in range(30)]}]
        payloads += [r["data"] for r in json.loads("[" + ",".join(VAL.read_text().splitlines()[:12]) + "]")]
        entries = []
        for i, payload in enumerate(payloads):
            blob = reg.encode(payload, version=version)
            (GOLDEN / f"{i:02d}.nbmf").parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN / f"{i:02d}.nbmf").write_bytes(blob)
            entries.append({"file": f"{i:02d}.nbmf", "fidelity": "lossless", "input": as_json(payload),
                            "version": version})
        write_index(GOLDEN, entries)
    entries = read_index(GOLDEN)
    neural = 0
    for e in entries:
        blob = (GOLDEN / e["file"]).read_bytes()
        assert reg.decode(blob) == from_json(e["input"]), e["file"]
        assert reg.encode(from_json(e["input"]), version=version) == blob, e["file"]
        h = unpack(blob)[0]
        neural += h.encoder_id == int(version[1:]) and not h.fallback
    assert len(entries) >= 15 and neural >= 12
