"""`nbmf bench` on ~40 real sample records: every codec, the gates, JSON/plot/pairs outputs."""

import base64
import json
import random
import zlib
from pathlib import Path

import pytest
import zstandard

import nbmf
from nbmf.bench import anchors, report
from nbmf.bench.metrics import Measurements, check_gates, summarize
from nbmf.bench.run import BenchConfig, run
from nbmf.dictionary import DictionarySpec, train_dictionary
from nbmf.payload import to_raw

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"
SMALL_DICT = DictionarySpec(size=8192, samples=400, seed=0)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("dict-cache")


@pytest.fixture(scope="module")
def lossless(cache):
    cfg = BenchConfig(input=SAMPLE / "val.jsonl", limit=40, dict_spec=SMALL_DICT, cache_dir=cache, progress=False)
    return run(cfg)


def test_every_codec_measured_on_the_same_records(lossless):
    rows = {r["codec"]: r for r in lossless["rows"]}
    assert set(anchors_names := ("legacy", "zlib-9", "zstd-19", "zstd-19-dict", "brotli-11")) <= set(rows)
    assert "stub" in rows and set(rows) == set(anchors_names) | set(lossless["registry"]["versions"])
    assert lossless["records"] == 40
    for row in rows.values():
        a = row["all"]
        assert a["n"] == 40 and a["raw_bytes"] == lossless["raw_bytes"]
        assert a["exact_rate"] == 1.0, row["codec"]  # every codec is lossless on real records
        assert a["ratio_min"] <= a["ratio_p5"] <= a["ratio_p50"]
        assert a["bits_per_byte"] == pytest.approx(8 / a["ratio"])
        assert sum(t["n"] for t in row["by_type"].values()) == 40
        assert {g["gate"] for g in row["gates"]} >= {"mean ratio >= 2x", "lossless exact 100%", "encode p95 < 120 ms"}
    assert rows["zstd-19-dict"]["extra_bytes"] == lossless["dictionary"]["bytes"] > 0
    current = rows[lossless["registry"]["current"]]  # the blobs say which codec wrote each body
    cur = lossless["registry"]["current"]
    assert sum(current["written_by"].values()) == 40 and set(current["written_by"]) <= {cur, f"{cur}:fallback", "stub"}
    assert current["fallbacks"] == 40 - current["written_by"].get(cur, 0)
    assert rows["stub"]["written_by"] == {"stub": 40} and rows["stub"]["fallbacks"] == 0
    # The legacy stub stores hex plus a JSON envelope: always bigger than zlib-9 of the same record.
    assert rows["legacy"]["all"]["ratio"] < rows["zlib-9"]["all"]["ratio"] / 2
    assert rows["legacy"]["all"]["ratio_code_hex_only"] == pytest.approx(rows["zlib-9"]["all"]["ratio"] / 2, rel=0.01)


def test_stored_sizes_are_whole_blobs(lossless):
    """Recompute the stub and legacy rows by hand from the same 40 records."""
    recs = [json.loads(line) for line in (SAMPLE / "val.jsonl").read_text().splitlines()[:40]]
    raw = sum(len(to_raw(r["data"])[0]) for r in recs)
    stub = sum(len(nbmf.encode(r["data"], version="stub")) for r in recs)
    legacy = sum(len(json.dumps(anchors.legacy_blob(r["data"])).encode()) for r in recs)
    rows = {r["codec"]: r for r in lossless["rows"]}
    assert rows["stub"]["all"]["ratio"] == pytest.approx(raw / stub)
    assert rows["legacy"]["all"]["ratio"] == pytest.approx(raw / legacy)


def test_legacy_blob_is_the_old_stub_format():
    payload = {"b": "é", "a": [1, 2]}
    blob = anchors.legacy_blob(payload)
    assert zlib.decompress(bytes.fromhex(blob["code"])) == json.dumps(payload, ensure_ascii=False).encode()
    import hashlib
    assert blob["sig"] == hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    text = "  many   spaces\n" * 300
    sem = anchors.legacy_blob(text, "semantic")
    assert bytes.fromhex(sem["code"]).decode() == " ".join(text.split())[:2048]
    res = nbmf.Registry.default().decode_result(json.dumps(sem).encode())
    assert res.truncated and res.payload == " ".join(text.split())[:2048]


def test_semantic_bench(cache, tmp_path):
    cfg = BenchConfig(input=SAMPLE / "val.jsonl", limit=24, fidelity="semantic", anchors=("legacy", "zlib-9"),
                      versions=("stub",), dict_spec=SMALL_DICT, cache_dir=cache, progress=False)
    res = run(cfg)
    rows = {r["codec"]: r for r in res["rows"]}
    assert set(rows) == {"legacy", "zlib-9", "stub"} and all(r["fidelity"] == "semantic" for r in rows.values())
    stub = rows["stub"]["all"]
    assert stub["exact_rate"] == 1.0  # the stub returns exactly the canonical form
    assert 0.0 < stub["similarity_min"] <= stub["similarity_p5"] <= stub["similarity_mean"] < 1.0
    # similarity is to the ORIGINAL text: "hello   world" -> "hello world" is 2 deletions in 13 chars
    tiny = tmp_path / "val.jsonl"
    tiny.write_text(json.dumps({"id": "t", "type": "document", "data": "hello   world"}) + "\n")
    one = run(BenchConfig(input=tiny, fidelity="semantic", anchors=(), versions=("stub",), progress=False))
    assert one["rows"][0]["all"]["similarity_mean"] == pytest.approx(1 - 2 / 13)
    names = {g["gate"] for g in rows["stub"]["gates"]}
    assert "semantic similarity mean >= 99.5%" in names and "lossless exact 100%" not in names


def test_outputs_json_plot_pairs(lossless, tmp_path):
    report.write_json(lossless, tmp_path / "b.json")
    data = json.loads((tmp_path / "b.json").read_text())
    assert {r["codec"] for r in data["rows"]} == {r["codec"] for r in lossless["rows"]}
    assert all("_points" not in r for r in data["rows"])
    report.write_plot(lossless, tmp_path / "b.png")
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.write_pairs(lossless, tmp_path / "pairs.jsonl") == 40
    pairs = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    for p in pairs[:10]:
        assert set(p) >= {"original", "compressed", "reconstructed", "compression_ratio", "similarity_score"}
        blob = base64.b64decode(p["compressed"])
        assert nbmf.decode(blob) == p["original"] == p["reconstructed"]
        assert p["compression_ratio"] == pytest.approx(len(to_raw(p["original"])[0]) / len(blob))
        assert p["similarity_score"] == 1.0
    lines = report.gate_lines(lossless)
    assert any(line.startswith(("PASS", "FAIL")) and "stub" in line for line in lines)


def test_dictionary_matches_anchor_recipe_and_is_cached(tmp_path):
    """Two-pass sampling gives exactly random.Random(seed).sample(records, k) in draw order."""
    spec = DictionarySpec(size=4096, samples=300, seed=3)
    data, info = train_dictionary(SAMPLE / "train.jsonl", spec, tmp_path)
    records = [to_raw(json.loads(line)["data"])[0] for line in (SAMPLE / "train.jsonl").read_text().splitlines()]
    expected = zstandard.train_dictionary(4096, random.Random(3).sample(records, 300)).as_bytes()
    assert data == expected and not info["cached"] and info["bytes"] == len(data)
    again, info2 = train_dictionary(SAMPLE / "train.jsonl", spec, tmp_path)
    assert again == data and info2["cached"]


def test_metrics_and_gates_by_hand():
    m = Measurements.empty()
    for raw, stored, ok in [(100, 50, True), (300, 100, True), (100, 80, False)]:
        m.add(raw, stored, "document", ok, None, 0.001, 0.002)
    s = summarize(m)
    assert s["ratio"] == pytest.approx(500 / 230) and s["ratio_min"] == pytest.approx(1.25)
    assert s["ratio_mean"] == pytest.approx((2 + 3 + 1.25) / 3) and s["exact_rate"] == pytest.approx(2 / 3)
    assert s["encode_ms_p95"] == pytest.approx(1.0)
    gates = {g["gate"]: g["passed"] for g in check_gates(s, "lossless")}
    assert gates["mean ratio >= 2x"] and not gates["no record < 1.5x"] and not gates["lossless exact 100%"]
    assert gates["encode p95 < 120 ms"]


class FlakyZlib(anchors.Zlib):
    """Injected failure: decoding every 5th record raises."""

    def __init__(self):
        super().__init__(9)
        self.calls = 0

    def decompress(self, data):
        self.calls += 1
        if self.calls % 5 == 0:
            raise RuntimeError("injected decode failure")
        return super().decompress(data)


def test_a_failing_codec_is_measured_not_fatal(monkeypatch, cache):
    monkeypatch.setattr(anchors, "Zlib", lambda level: FlakyZlib())
    cfg = BenchConfig(input=SAMPLE / "val.jsonl", limit=20, anchors=("zlib-9",), versions=(), cache_dir=cache,
                      progress=False)
    row = run(cfg)["rows"][0]
    assert row["all"]["errors"] > 0 and row["all"]["exact_rate"] < 1.0
    assert not {g["gate"]: g["passed"] for g in row["gates"]}["lossless exact 100%"]
    assert "injected decode failure" in row["error_messages"][0]


def test_bad_config_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown anchor"):
        BenchConfig(input=SAMPLE / "val.jsonl", anchors=("lz4",))
    with pytest.raises(ValueError, match="unknown encoder version"):
        run(BenchConfig(input=SAMPLE / "val.jsonl", limit=2, anchors=(), versions=("v99",), progress=False))
    lone = tmp_path / "val.jsonl"
    lone.write_text((SAMPLE / "val.jsonl").read_text().splitlines()[0] + "\n")
    with pytest.raises(ValueError, match="--train"):
        run(BenchConfig(input=lone, anchors=("zstd-19-dict",), versions=(), progress=False))
