"""`nbmf collect`: files + an L2 store -> Parquet dataset with the right counts, splits and reports."""

import json
import tracemalloc
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import nbmf
from nbmf.bench.anchors import legacy_blob
from nbmf.data.collect import CollectConfig, collect
from nbmf.data.dataset import read_records
from nbmf.data.sources import SourceOptions, chunk_text, iter_json_array
from nbmf.data.store import SQLiteL2Store
from nbmf.payload import canonical, to_raw

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "train.jsonl"


def corpus_records(n, start=0):
    return [json.loads(line) for line in SAMPLE.read_text().splitlines()[start:start + n]]


def raw_of(data):
    return to_raw(data)[0]


@pytest.fixture
def sources(tmp_path):
    """Files of every supported type with known bad lines, plus an L2 store with 4 blob flavours."""
    src = tmp_path / "src"
    (src / "nested").mkdir(parents=True)
    recs = corpus_records(30)
    lines = [json.dumps(r, ensure_ascii=False).encode() for r in recs[:20]]
    lines.insert(5, b'{"id": "broken", "data": ')  # invalid JSON (line 6)
    lines.insert(9, b'{"id": "bad-utf8", "data": "\xff\xfe"}')  # invalid UTF-8 (line 10)
    lines.append(json.dumps(recs[0]).encode())  # exact duplicate of line 1
    lines.append(b'{"no_data": true}')  # not a corpus record
    (src / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (src / "nested" / "b.json").write_text(json.dumps(recs[20:25], ensure_ascii=False, indent=1))
    (src / "nested" / "notes.md").write_text("# Title\n\nfirst paragraph\nstill first\n\n\n" + "para two " * 40 + "\n")
    (src / "readme.txt").write_bytes(b"alpha paragraph\n\nbeta \xff line\nbeta ok\n")  # one bad line
    (src / "ignored.csv").write_text("a,b\n")

    l2 = tmp_path / "l2.sqlite"
    payloads = [r["data"] for r in recs[25:30]]
    long_text = "word " * 1000  # canonical form > 2048 chars: legacy semantic preview is truncated
    with SQLiteL2Store(l2) as store:
        store.put("stub-lossless", nbmf.encode(payloads[0]), record_class=recs[25]["type"])
        store.put("stub-semantic", nbmf.encode(payloads[1], fidelity="semantic"), record_class=recs[26]["type"])
        store.put("legacy-lossless", json.dumps(legacy_blob(payloads[2])).encode(), record_class=recs[27]["type"])
        store.put("legacy-semantic", json.dumps(legacy_blob(long_text, "semantic")).encode(), record_class="document")
        store.put("legacy-dup", json.dumps(legacy_blob(recs[1]["data"])).encode(), domain="general")  # dup of a.jsonl
        store.put("corrupt", nbmf.encode("will be damaged")[:-1] + b"\x00")
    return {"dir": src, "l2": l2, "recs": recs, "payloads": payloads, "long_text": long_text}


def run(tmp_path, srcs, name="ds", **kw):
    kw.setdefault("progress", False)
    return collect(CollectConfig(sources=tuple(str(s) for s in srcs), out=tmp_path / name, **kw))


def test_collect_files_and_l2(tmp_path, sources):
    mf = run(tmp_path, [sources["dir"], f"l2://{sources['l2']}"], chunk_bytes=100)
    assert mf["records"] == 20 + 5 + 2 + 1 + 3  # jsonl + json + md chunks + txt chunk + l2 (minus dup, corrupt, cut)
    assert mf["skipped"] == {"duplicate": 2, "truncated_preview": 1}
    reasons = {b["origin"]: b["reason"] for b in mf["bad_lines"]["examples"]}
    a = sources["dir"] / "a.jsonl"
    assert "invalid JSON" in reasons[f"{a}:6"]
    assert "invalid UTF-8" in reasons[f"{a}:10"]
    assert "not a corpus record" in reasons[f"{a}:24"]
    assert "invalid UTF-8" in reasons[f"{sources['dir'] / 'readme.txt'}:3"]
    assert "CorruptBlobError" in reasons["l2:corrupt"]
    assert mf["bad_lines"]["count"] == 5

    rows = list(read_records(tmp_path / "ds", include_semantic=True))
    assert len(rows) == mf["records"] == sum(s["rows"] for s in mf["shards"])
    assert sum(sum(c.values()) for c in mf["counts"].values()) == mf["records"]
    by_origin = {r["origin"]: r for r in rows}
    # corpus records keep their raw bytes, type, source; every sha256 matches its raw
    first = by_origin[f"{a}:1"]
    rec0 = sources["recs"][0]
    assert first["raw"] == raw_of(rec0["data"]) and first["type"] == rec0["type"]
    assert first["source"] == rec0["metadata"]["source"] and first["kind"] in ("text", "json")
    import hashlib
    assert all(hashlib.sha256(r["raw"]).hexdigest() == r["sha256"] and r["n_bytes"] == len(r["raw"]) for r in rows)
    # L2: lossless blobs decode exactly; semantic ones are flagged and hold the canonical form
    l2 = {r["id"]: r for r in rows if r["origin"].startswith("l2:")}
    assert set(l2) == {"stub-lossless", "stub-semantic", "legacy-lossless"}  # the cut preview is skipped
    assert l2["stub-lossless"]["raw"] == raw_of(sources["payloads"][0])
    assert l2["legacy-lossless"]["raw"] == raw_of(sources["payloads"][2])
    assert l2["stub-lossless"]["fidelity"] == l2["legacy-lossless"]["fidelity"] == "lossless"
    assert l2["stub-semantic"]["fidelity"] == "semantic"
    payload = sources["payloads"][1]
    assert l2["stub-semantic"]["raw"] == canonical(*to_raw(payload))
    assert [s["truncated_previews"] for s in mf["sources"]] == [0, 1]
    # text chunks: the .md file is one document (one group), split at paragraph boundaries
    md = [r for r in rows if r["id"].startswith("nested/notes.md#")]
    assert {r["group"] for r in md} == {"nested/notes.md"} and len({r["id"] for r in md}) == len(md) == 2
    assert md[0]["raw"].decode() == "# Title\n\nfirst paragraph\nstill first"


def test_semantic_rows_are_out_of_training_by_default(tmp_path, sources):
    run(tmp_path, [f"l2://{sources['l2']}"], name="plain")
    assert {r["fidelity"] for r in read_records(tmp_path / "plain")} == {"lossless"}
    assert len(list(read_records(tmp_path / "plain"))) == 3
    assert len(list(read_records(tmp_path / "plain", include_semantic=True))) == 4
    run(tmp_path, [f"l2://{sources['l2']}"], name="incl", include_semantic=True)
    assert len(list(read_records(tmp_path / "incl"))) == 4


def test_splits_are_stable_and_group_disjoint(tmp_path):
    src = tmp_path / "dialogues.jsonl"
    with open(src, "w") as f:
        for d in range(60):
            for turn in range(4):
                f.write(json.dumps({"id": f"{d}-{turn}", "type": "conversation",
                                    "data": {"messages": [{"role": "user", "content": f"dialogue {d} turn {turn}"}]},
                                    "metadata": {"source": "t", "dialogue": f"d{d}"}}) + "\n")
    kw = dict(group_key="metadata.dialogue", fractions=(0.5, 0.25, 0.25), shard_rows=16)
    m1 = run(tmp_path, [src], name="one", **kw)
    m2 = run(tmp_path, [src], name="two", **kw)
    assert m1["content_hash"] == m2["content_hash"] and m1["counts"] == m2["counts"]
    split_of = lambda name: {r["id"]: (r["group"], s) for s in ("train", "val", "test")  # noqa: E731
                             for r in read_records(tmp_path / name, s, columns=["id", "group"])}
    one, two = split_of("one"), split_of("two")
    assert one == two and len(one) == 240
    groups = {}
    for g, s in one.values():
        groups.setdefault(g, set()).add(s)
    assert all(len(s) == 1 for s in groups.values())  # a dialogue never spans splits
    assert {s for ss in groups.values() for s in ss} == {"train", "val", "test"}
    assert max(s["rows"] for s in m1["shards"]) <= 16 and len(m1["shards"]) > 3
    # a different seed moves groups; the contents (and their hash) do not change
    m3 = run(tmp_path, [src], name="three", seed=1, **kw)
    assert m3["content_hash"] == m1["content_hash"] and split_of("three") != one


def test_filters_limit_and_overwrite(tmp_path, sources):
    mf = run(tmp_path, [sources["dir"] / "a.jsonl"], types=("structured",))
    assert set().union(*(c.keys() for c in mf["counts"].values())) == {"structured"}
    assert mf["skipped"]["filtered_type"] > 0
    with pytest.raises(FileExistsError):
        run(tmp_path, [sources["dir"] / "a.jsonl"])
    mf = run(tmp_path, [sources["dir"] / "a.jsonl"], limit=7, overwrite=True)
    assert mf["records"] == 7 and len(list(read_records(tmp_path / "ds"))) == 7
    mf = run(tmp_path, [sources["dir"] / "a.jsonl"], domains=("elsewhere",), overwrite=True)
    assert mf["records"] == 0 and mf["skipped"]["filtered_domain"] == 21  # filters run before dedup


@pytest.mark.parametrize("bad", ["missing.jsonl", "table.csv"])
def test_unreadable_sources_are_clear_errors(tmp_path, bad):
    (tmp_path / "table.csv").write_text("a\n")
    with pytest.raises((FileNotFoundError, ValueError), match="source"):
        run(tmp_path, [tmp_path / bad])
    assert not (tmp_path / "ds").exists()


def test_json_array_streams_in_small_pieces(tmp_path):
    items = [{"id": str(i), "data": {"n": i, "s": "é" * i, "f": 1.5e-3}} for i in range(30)] + [{"data": 12345}]
    path = tmp_path / "arr.json"
    path.write_text(json.dumps(items, ensure_ascii=False, indent=2))
    got = list(iter_json_array(path, SourceOptions(), lambda n: None, chunk_chars=7))
    assert [r.raw for r in got] == [raw_of(i["data"]) for i in items]
    assert got[1].origin == f"{path}:10"  # line where element 1 starts
    path.write_text('[{"data": 1}, {"data": 2} {"data": 3}]')
    got = list(iter_json_array(path, SourceOptions(), lambda n: None, chunk_chars=5))
    assert [type(g).__name__ for g in got] == ["Record", "Record", "BadLine"]


def test_chunk_text_keeps_paragraphs_whole():
    paras = [(i * 3 + 1, [f"paragraph {i} " + "x" * (i * 37 % 300)]) for i in range(40)]
    chunks = list(chunk_text(iter(paras), 500))
    assert "\n\n".join(c for _, c in chunks) == "\n\n".join(p[1][0] for p in paras)
    assert all(len(c.encode()) <= 500 for _, c in chunks)
    huge = [(1, [f"line {i} " + "y" * 60 for i in range(100)])]  # one paragraph of ~7 KB: cut at lines
    pieces = list(chunk_text(iter(huge), 1000))
    assert len(pieces) > 5 and "\n".join(c for _, c in pieces) == "\n".join(huge[0][1])


def test_memory_stays_bounded(tmp_path):
    """An 8 MB JSONL streams through: Python-side peak stays far below the input size."""
    path = tmp_path / "big.jsonl"
    with open(path, "w") as f:
        for i in range(4000):
            f.write(json.dumps({"id": str(i), "type": "document", "data": f"{i} " + "lorem ipsum " * 160}) + "\n")
    size = path.stat().st_size
    tracemalloc.start()
    mf = run(tmp_path, [path], shard_rows=50)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert mf["records"] == 4000 and len(mf["shards"]) >= 60
    assert peak < size / 4, f"peak {peak} B for a {size} B input"


def test_cli_collect(tmp_path, sources, capsys):
    from nbmf.cli import main

    rc = main(["collect", str(sources["dir"] / "a.jsonl"), "--l2", str(sources["l2"]), "-o", str(tmp_path / "c"),
               "--fractions", "0.8,0.1,0.1", "--no-progress"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["records"] == 20 + 3 and out["bad_lines"] == 4
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["options"]["fractions"] == [0.8, 0.1, 0.1]
    for shard in manifest["shards"]:
        assert pq.read_schema(tmp_path / "c" / shard["path"]).names == [
            "id", "group", "type", "domain", "source", "kind", "fidelity", "raw", "n_bytes", "sha256", "origin"]
    assert main(["collect", str(tmp_path / "nothing.jsonl"), "-o", str(tmp_path / "d")]) == 2
