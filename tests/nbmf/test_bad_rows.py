"""A bad L2 row never ends `nbmf collect` or `nbmf migrate`: it is counted, reported and skipped, and a rerun
finishes; the store's own failure still stops the run. Semantic JSON rows collect as their canonical JSON."""
from __future__ import annotations

import hashlib
import json
import sqlite3
import zlib

import pytest

import nbmf
from nbmf.bench.anchors import legacy_blob
from nbmf.blob import Fidelity, Kind, pack
from nbmf.codecs.stub import StubCodec
from nbmf.data.collect import CollectConfig, collect
from nbmf.data.dataset import read_records
from nbmf.data.store import SQLiteL2Store
from nbmf.migrate import MigrateConfig, migrate
from nbmf.payload import canonical, to_raw
from nbmf.registry import Registry

DEEP = b"[" * 100_000 + b"]" * 100_000  # valid JSON nested far past any parser's recursion limit
HUGE_INT = b'{"n": ' + b"9" * 5000 + b"}"  # valid JSON; Python refuses ints of over 4300 digits from text


def legacy_of_raw(raw: bytes) -> bytes:
    """A legacy lossless blob of JSON text json.dumps could not have written for us (too deep / too long an int);
    its sig is the real one, since that text is already in json.dumps(sort_keys=True)'s spelling."""
    return json.dumps({"meta": {"fidelity": "lossless", "type": "json", "length_bytes": len(raw)},
                       "code": zlib.compress(raw, 9).hex(), "sig": hashlib.sha256(raw).hexdigest()}).encode()


def stub_of_raw(raw: bytes, kind=Kind.JSON) -> bytes:
    """A well-formed stub blob (checksum holds) whose raw bytes are ``raw``."""
    return pack(encoder_id=0, fidelity=Fidelity.LOSSLESS, kind=kind, original_length=len(raw),
                body=StubCodec().encode_raw(raw))


GOOD = {  # id -> (payload, fidelity, legacy meta.type or None: a v1 stub blob)
    "g-text": ("Book a table for two at 7pm.", "lossless", None),
    "g-dict": ({"role": "user", "content": "hé", "n": [1, 2.5, None]}, "lossless", None),
    "g-legacy": ({"k": "legacy value", "list": [3, 4]}, "lossless", "json"),
    "s-list": ([91, 93], "semantic", None),  # bytes([91, 93]) == b"[]": the reported garbage
    "s-dict": ({"b": [1, 2], "a": "x  y"}, "semantic", None),
    "s-text": ("  Spaced \n out  text ", "semantic", None),
    "s-legacy-json": ({"z": 1, "a": [1, 2]}, "semantic", "json"),  # a preview: a str, also for JSON
    "s-legacy-dict": ({"y": [True, None], "x": "é"}, "semantic", "dict"),  # the golden blobs' spelling
    "s-legacy-text": ("a legacy   semantic text", "semantic", "text"),
    "s-legacy-str": ("[1, 2] is text here", "semantic", "str"),
}
N_LEGACY = sum(meta is not None for _, _, meta in GOOD.values())
BAD = {  # id -> blob column value
    "b-deep-legacy": legacy_of_raw(DEEP),
    "b-deep-stub": stub_of_raw(DEEP),
    "b-int-legacy": legacy_of_raw(HUGE_INT),
    "b-int-stub": stub_of_raw(HUGE_INT),
    "b-damaged": nbmf.encode("a v1 blob that will be damaged", version="stub")[:-1] + b"\x00",
    "b-null": None,
    "b-str": "not bytes",
    "b-int": 5,
}
CUT = "c-cut-preview"


@pytest.fixture
def store(tmp_path):
    """An L2 store in a table another tool created: same columns, but its blob column allows NULL."""
    path = tmp_path / "l2.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE records (id TEXT PRIMARY KEY, domain TEXT NOT NULL, record_class TEXT NOT NULL, "
                     "blob BLOB, encoder_version TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL)")
    stub = Registry(None)
    with SQLiteL2Store(path) as s:
        for rid, (payload, fidelity, meta_type) in GOOD.items():
            if meta_type is None:
                s.put(rid, stub.encode(payload, fidelity=fidelity))
            else:
                old = legacy_blob(payload, fidelity)
                old["meta"]["type"] = meta_type
                s.put(rid, json.dumps(old).encode())
        s.put(CUT, json.dumps(legacy_blob("word " * 1000, "semantic")).encode())
        for rid, blob in BAD.items():
            s.put(rid, b"placeholder", encoder_version="legacy")
    with sqlite3.connect(path) as conn:  # what another writer may leave: values put() would never store
        conn.executemany("UPDATE records SET blob = ? WHERE id = ?", [(b, rid) for rid, b in BAD.items()])
    return path


def expected_raw(payload, fidelity: str) -> tuple[bytes, str]:
    raw, kind = to_raw(payload)
    return (canonical(raw, kind) if fidelity == "semantic" else raw), kind.label


def blobs(path) -> dict:
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT id, blob FROM records"))


def test_collect_counts_reports_and_skips_bad_rows(tmp_path, store, capsys):
    from nbmf.cli import main

    for name in ("one", "two"):  # the rerun finishes the same way
        rc = main(["collect", f"l2://{store}", "-o", str(tmp_path / name), "--no-progress"])
        assert rc == 0
        err = capsys.readouterr().err
        assert all(f"bad: l2:{rid}: " in err for rid in BAD)
    mf, mf2 = (json.loads((tmp_path / name / "manifest.json").read_text()) for name in ("one", "two"))
    assert all(mf[k] == mf2[k] for k in ("records", "counts", "skipped", "bad_lines", "content_hash"))
    assert mf["records"] == len(GOOD) and mf["skipped"] == {"truncated_preview": 1}
    assert mf["bad_lines"]["count"] == len(BAD)
    reasons = {b["origin"]: b["reason"] for b in mf["bad_lines"]["examples"]}
    assert set(reasons) == {f"l2:{rid}" for rid in BAD}
    for rid in ("b-null", "b-str", "b-int"):
        assert reasons[f"l2:{rid}"].startswith("TypeError: the blob column holds ")
    assert reasons["l2:b-damaged"].startswith("CorruptBlobError: ")
    assert all(reason.split(":")[0].isidentifier() for reason in reasons.values())  # "ErrorClass: message"

    rows = {r["id"]: r for r in read_records(tmp_path / "one", include_semantic=True)}
    assert set(rows) == set(GOOD)
    for rid, (payload, fidelity, meta_type) in GOOD.items():
        assert (rows[rid]["raw"], rows[rid]["kind"], rows[rid]["fidelity"]) == (*expected_raw(payload, fidelity),
                                                                               fidelity), rid
    # the v1 canonical form (a whole legacy preview holds the old one, json.dumps's separators: re-canonicalized)
    assert rows["s-list"]["raw"] == b"[91,93]" and rows["s-dict"]["raw"] == b'{"a":"x  y","b":[1,2]}'
    assert rows["s-legacy-json"]["raw"] == b'{"a":[1,2],"z":1}'


def test_collect_stops_on_a_store_that_cannot_be_read(tmp_path):
    bad = tmp_path / "garbage.sqlite"
    bad.write_bytes(b"this is not an SQLite database file at all, just bytes" * 100)
    with pytest.raises(ValueError, match="reading the L2 store failed"):
        collect(CollectConfig(sources=(f"l2://{bad}",), out=tmp_path / "ds", progress=False))
    assert not (tmp_path / "ds" / "manifest.json").exists()


def test_migrate_counts_reports_and_skips_bad_rows(store, capsys):
    before = blobs(store)
    reg = Registry(None)  # target: the stub; every legacy row is re-encoded
    out = migrate(MigrateConfig(store=store, batch_size=4, progress=False), registry=reg)
    err = capsys.readouterr().err
    assert all(f"nbmf migrate: {rid}: " in err for rid in BAD)
    assert out["bad_rows"] == len(BAD) and out["blob_not_bytes"] == 3 and out["undecodable"] == len(BAD) - 3
    assert out["skipped_truncated_preview"] == 1
    assert out["migrated"] == N_LEGACY and out["already_at_target"] == len(GOOD) - N_LEGACY
    after = blobs(store)
    assert {rid: after[rid] for rid in BAD} == BAD and after[CUT] == before[CUT]  # left exactly as they were
    for rid in GOOD:
        assert reg.decode(after[rid]) == reg.decode(before[rid]), rid

    again = migrate(MigrateConfig(store=store, batch_size=4, progress=False), registry=reg)
    assert again["bad_rows"] == len(BAD) and again.get("migrated", 0) == 0
    assert again["already_at_target"] == len(GOOD) and blobs(store) == after


def test_migrate_cli_exit_status_says_bad_rows_were_left(store, capsys):
    from nbmf.cli import main

    assert main(["migrate", str(store), "--model-dir", str(store.parent / "no-models"), "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["bad_rows"] == len(BAD)
    assert f"{len(BAD)} bad rows left as they were" in captured.err


def test_one_payload_the_encoder_refuses_costs_only_its_row(store, monkeypatch):
    reg = Registry(None)
    real = reg.encode_many

    def refuses_lists(payloads, *a, **k):
        if any(isinstance(p, list) for p in payloads):
            raise RecursionError("maximum recursion depth exceeded (simulated)")
        return real(payloads, *a, **k)

    monkeypatch.setattr(reg, "encode_many", refuses_lists)
    with SQLiteL2Store(store) as s:
        s.put("s-list-legacy", json.dumps(legacy_blob([91, 93])).encode())
    out = migrate(MigrateConfig(store=store, batch_size=64, progress=False), registry=reg)
    assert out["encode_failed"] == 1 and out["bad_rows"] == len(BAD) + 1
    assert out["migrated"] == N_LEGACY  # its batch-mates still migrate
    with SQLiteL2Store(store) as s:
        assert s.get("s-list-legacy").encoder_version == "legacy"


def test_a_store_failure_stops_migrate(store, monkeypatch, capsys):
    from nbmf.cli import main

    def locked(self, *a, **k):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(SQLiteL2Store, "replace_if_unchanged", locked)
    with pytest.raises(sqlite3.OperationalError):
        migrate(MigrateConfig(store=store, progress=False), registry=Registry(None))
    assert main(["migrate", str(store), "--model-dir", str(store.parent / "no-models"), "--no-progress"]) == 2
    assert "OperationalError: database is locked" in capsys.readouterr().err
    assert main(["migrate", str(store.parent / "missing.sqlite"), "--no-progress"]) == 2
    assert not (store.parent / "missing.sqlite").exists()


def test_collect_skips_file_lines_python_will_not_build(tmp_path):
    good = [json.dumps({"id": str(i), "data": f"note {i}"}).encode() for i in range(3)]
    lines = [good[0], b'{"id": "deep", "data": ' + DEEP + b"}", good[1], b'{"id": "int", "data": ' + HUGE_INT + b"}",
             good[2]]
    (tmp_path / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (tmp_path / "b.json").write_bytes(b"[" + good[0] + b", " + b'{"data": ' + HUGE_INT + b"}]")
    mf = collect(CollectConfig(sources=(str(tmp_path / "a.jsonl"), str(tmp_path / "b.json")), out=tmp_path / "ds",
                               progress=False))
    assert mf["records"] == 3 and mf["skipped"] == {"duplicate": 1}  # b.json's first element is a.jsonl's first
    reasons = {b["origin"]: b["reason"] for b in mf["bad_lines"]["examples"]}
    assert set(reasons) == {f"{tmp_path / 'a.jsonl'}:2", f"{tmp_path / 'a.jsonl'}:4", f"{tmp_path / 'b.json'}:1"}
    assert all("unreadable JSON" in r for r in reasons.values())
