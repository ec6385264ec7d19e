"""The online per-record temperature (nbmf.runtime.match, "temperature" in match.json; models/v3): exact round
trips in batch, threads and another process, the tables the coder uses, adaptation where the model is surprised,
v2 untouched, hostile parameters refused with typed errors."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers.artifacts import assert_device_matches_kernel, cross_process, forged_match, sample_items
from nbmf.artifact import MATCH, fingerprint, read_manifest
from nbmf.codecs.neural import load_codec
from nbmf.errors import ArtifactError
from nbmf.runtime import match

ROOT = Path(__file__).resolve().parents[2]
V2 = ROOT / "models" / "v2"
VAL = ROOT / "data" / "sample" / "val.jsonl"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """v2 (match model) and, registered from it by the export path, v3 = v2 + a temperature."""
    from nbmf.export import register_temperature

    d = tmp_path_factory.mktemp("models")
    shutil.copytree(V2, d / "v2")
    (d / "CURRENT").write_text("v2\n")
    register_temperature(d / "v2", d, eta=10, q_min=8, q_max=20, check=[], command="test fixture")
    return d


@pytest.fixture(scope="module")
def tcodec(models_dir):
    return load_codec(models_dir / "v3", threads=1)


@pytest.fixture(scope="module")
def v2codec():
    return load_codec(V2, threads=1)


def surprising_records() -> list[bytes]:
    """Text the model has seen nothing like: hex digests, a base64 blob, a table of random floats."""
    rng = np.random.default_rng(7)
    digests = "\n".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(40))
    floats = json.dumps({"m": [[round(float(x), 6) for x in row] for row in rng.normal(size=(12, 6))]})
    import base64

    return [digests.encode(), base64.b64encode(rng.bytes(900)), floats.encode()]


def test_the_new_version_is_v2_with_a_temperature_and_v2_is_untouched(models_dir):
    m3, m2 = read_manifest(models_dir / "v3"), read_manifest(models_dir / "v2")
    assert m3["encoder_id"] == 3 and m3["match"]["temperature"] == {"eta": 10, "min": 8, "max": 20}
    assert {k: v for k, v in m3["files"].items() if k != MATCH} == {k: v for k, v in m2["files"].items() if k != MATCH}
    assert (models_dir / "v2" / MATCH).read_bytes() == (V2 / MATCH).read_bytes()
    fp = {p: fingerprint(read_manifest(p)) for p in (models_dir / "v3", models_dir / "v2", V2)}
    assert fp[models_dir / "v3"] != fp[models_dir / "v2"] == fp[V2]
    assert (models_dir / "CURRENT").read_text().strip() == "v2"
    spec = json.loads((models_dir / "v3" / MATCH).read_bytes())
    assert spec["temperature"] == {"eta": 10, "min": 8, "max": 20}
    assert match.to_json(match.from_json((models_dir / "v3" / MATCH).read_bytes(), "x")) == \
        (models_dir / "v3" / MATCH).read_bytes()  # canonical


def test_match_export_fits_the_hit_table_and_adds_the_temperature_in_one_version(tmp_path):
    """``python -m nbmf.export match BASE --temperature ETA MIN MAX`` (how a retrained network gets both): one new
    version whose hit table is fitted on its own tables and whose match model carries the temperature."""
    from nbmf.export import main

    shutil.copytree(V2, tmp_path / "v2")
    (tmp_path / "CURRENT").write_text("v2\n")
    train = ROOT / "data" / "sample" / "train.jsonl"
    main(["match", str(tmp_path / "v2"), "--train", str(train), "--models", str(tmp_path), "--records", "60",
          "--k", "1", "--temperature", "10", "8", "20"])
    about = read_manifest(tmp_path / "v3")["match"]
    assert about["temperature"] == {"eta": 10, "min": 8, "max": 20} and about["fit_records"] == 60
    codec = load_codec(tmp_path / "v3", threads=1)
    m, base = codec.model.match, load_codec(V2, threads=1).model.match
    assert (m.temp == match.with_temperature(m, 10, 8, 20).temp).all() and m.temp[0] != 0 and base.temp[0] == 0
    assert not np.array_equal(m.hit, base.hit)  # fitted on these records, not carried over from the base
    items = sample_items(VAL, limit=12)
    bodies = codec.encode_many(items)
    assert codec.decode_many([(b, k, len(r)) for b, (r, k) in zip(bodies, items)]) == [r for r, _ in items]


def test_lut_rows_are_head_lut_at_scaled_gaps(tcodec):
    m, lut = tcodec.model.match, np.asarray(tcodec.model.params["head_lut"], np.int64)
    assert m.luts.shape[0] == 20 - 8 + 1
    one = m.luts[16 - 8]
    assert np.array_equal(one[: len(lut)], lut) and np.all(one[len(lut):] == lut[-1])  # tau = 1: head_lut itself
    g = np.arange(m.luts.shape[1])
    for q in (8, 12, 20):
        assert np.array_equal(m.luts[q - 8], lut[np.minimum((g * q + 8) >> 4, len(lut) - 1)])
    assert m.luts[0][-1] == lut[-1]  # every row reaches head_lut's floor before its end


def test_round_trips_identically_in_batch_one_by_one_and_threads(models_dir, tcodec):
    items = sample_items(VAL, limit=40) + [(r, 0) for r in surprising_records()]
    bodies = tcodec.encode_many(items)
    assert [tcodec.encode_raw(r, k) for r, k in items[:6]] == bodies[:6]
    threaded = load_codec(models_dir / "v3", threads=3)
    assert threaded.encode_many(items) == bodies
    jobs = [(b, k, len(r)) for b, (r, k) in zip(bodies, items)]
    want = [r for r, _ in items]
    assert tcodec.decode_many(jobs) == want and threaded.decode_many(jobs) == want
    assert [tcodec.decode_raw(*j) for j in jobs[-4:]] == want[-4:]


def test_refilled_decode_slots_start_with_fresh_match_and_temperature_state(tcodec, monkeypatch):
    """Slots handed from a finished record to the next (intmodel.DECODE_SLOTS) start with a reset match table and
    theta: the surprising records move theta far from 1, and the records after them still decode."""
    from nbmf.runtime import intmodel

    items = [(r, 0) for r in surprising_records()] + sample_items(VAL, limit=12)
    jobs = [(b, k, len(r)) for b, (r, k) in zip(tcodec.encode_many(items), items)]
    monkeypatch.setattr(intmodel, "DECODE_SLOTS", 2)
    assert tcodec.decode_many(jobs) == [r for r, _ in items]


def test_bodies_decode_in_another_process_with_other_batch_and_threads(models_dir):
    bodies = cross_process(models_dir / "v3", VAL, "encode", 16, 2, limit=30)
    assert cross_process(models_dir / "v3", VAL, "decode", 1, 1, limit=30, stdin=bodies).startswith("ok 30")


def test_the_tables_are_the_ones_the_coder_codes_with(tcodec):
    """IntModel.frequencies(seq, targets) runs the coder's steps without the coder: its code length is what the
    range coder writes, to within the coder's rounding and flush."""
    for raw in [r for r, _ in sample_items(VAL, limit=6)] + surprising_records():
        bits = tcodec.cross_entropy_bits(raw, 0)
        body = tcodec.encode_raw(raw, 0)
        assert 8 * len(body) <= bits * 1.01 + 64 and bits <= 8 * len(body) + 8, (len(raw), bits, len(body))


def test_it_flattens_where_the_model_is_surprised_and_keeps_val_as_it_was(tcodec, v2codec):
    odd = surprising_records()
    t = [len(tcodec.encode_raw(r, 0)) for r in odd]
    v = [len(v2codec.encode_raw(r, 0)) for r in odd]
    assert t[1] < 0.97 * v[1] and all(a <= 1.01 * b for a, b in zip(t, v)), (t, v)  # base64: the model is lost
    items = sample_items(VAL, limit=60)
    t, v = (sum(map(len, c.encode_many(items))) for c in (tcodec, v2codec))
    assert t <= 1.01 * v, (t, v)


def test_theta_stays_in_its_range():
    temp = np.array([1, 1000, 8, 20], np.int64)
    ht, ms = match.state(match.make(1, 6, 8, np.zeros((match.LEN_BUCKETS, match.PROB_BUCKETS), np.int64)).conf, 1)
    match.reset(ht, ms, 0)
    assert ms[0, 2] == 1 << 16 and match.level(temp, ms, 0) == 16 - 8
    match.temper(temp, ms, 0, 0, 1, 5000)  # a token far below the best: flatten, down to min
    assert ms[0, 2] == 8 << 12 and match.level(temp, ms, 0) == 0
    match.temper(temp, ms, 0, 10**9, 1, 0)
    assert ms[0, 2] == 20 << 12 and match.level(temp, ms, 0) == 12


def test_the_decode_bomb_bound_stays_v2s(tcodec, v2codec):
    assert [tcodec.max_length(n) for n in (1, 9, 64, 4096)] == [v2codec.max_length(n) for n in (1, 9, 64, 4096)]


@pytest.mark.parametrize("edit,why", [
    (lambda d: d.replace(b'"eta": 10', b'"eta": 0'), "eta in"),
    (lambda d: d.replace(b'"eta": 10', b'"eta": 4096'), "eta in"),
    (lambda d: d.replace(b'"min": 8', b'"min": 2'), "min <= 16"),
    (lambda d: d.replace(b'"max": 20', b'"max": 12'), "min <= 16"),
    (lambda d: d.replace(b'"eta": 10', b'"eta": 1.5'), "temperature must be"),
    (lambda d: d.replace(b'"eta": 10,', b'"eta": 10, "x": 1,'), "temperature must be"),
    (lambda d: d.replace(b'"temperature"', b'"temperatur"'), "must hold exactly"),
])
def test_hostile_temperature_parameters_are_refused(models_dir, tmp_path, edit, why):
    with pytest.raises(ArtifactError, match=why):
        load_codec(forged_match(models_dir / "v3", tmp_path / "v3", edit))


def test_the_device_runtime_runs_it_with_the_kernel_bytes(tcodec):
    """Each record's temperature level picks the device's table; the host moves it (kernels.matched_intervals,
    match_after_step): the kernel's bytes, through refills and narrowing."""
    pytest.importorskip("torch")
    assert_device_matches_kernel(tcodec, sample_items(VAL, limit=10) + [(r, 0) for r in surprising_records()])


@pytest.mark.skipif(not (ROOT / "models" / "v3").exists(), reason="models/v3 not registered")
def test_the_released_v3_is_this_export_of_v2():
    """models/v3 was made by the documented command: v2's files, and v2's match model with its temperature."""
    m3 = read_manifest(ROOT / "models" / "v3")
    assert m3["training"]["commands"][-1].startswith("python -m nbmf.export temperature models/v2 ")
    m2 = read_manifest(V2)
    assert {k: v for k, v in m3["files"].items() if k != MATCH} == {k: v for k, v in m2["files"].items() if k != MATCH}
    assert os.path.getsize(ROOT / "models" / "v3" / MATCH) < 8192
