"""`nbmf migrate`: verified, resumable re-encoding; kill -9 at any moment loses nothing."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.artifacts import sample_records
from nbmf.bench.anchors import legacy_blob
from nbmf.data.store import SQLiteL2Store
from nbmf.migrate import MigrateConfig, migrate
from nbmf.registry import Registry

ROOT = Path(__file__).resolve().parents[2]
VAL = ROOT / "data" / "sample" / "val.jsonl"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from helpers.artifacts import tiny_artifact

    d = tmp_path_factory.mktemp("models")
    tiny_artifact(d / "v1", steps=20)
    (d / "CURRENT").write_text("v1\n")
    return d


def seed(path: Path, n: int) -> dict:
    """Legacy lossless, legacy semantic (short and cut) and stub blobs; returns id -> expected payload."""
    stub = Registry(None)
    store = SQLiteL2Store(path)
    expected = {}
    for i, r in enumerate(sample_records(VAL, limit=n)):
        rid = f"r{i:04d}"
        if i % 4 == 3:
            store.put(rid, stub.encode(r["data"]))
        elif i % 10 == 5:
            store.put(rid, json.dumps(legacy_blob(r["data"], "semantic")).encode())
        else:
            store.put(rid, json.dumps(legacy_blob(r["data"])).encode())
        expected[rid] = Registry(None).decode_result(store.get(rid).blob)
    store.put("cut", json.dumps(legacy_blob("word " * 1000, "semantic")).encode())
    expected["cut"] = stub.decode_result(store.get("cut").blob)
    store.close()
    return expected


def check_all(path: Path, model_dir: Path, expected: dict) -> dict:
    reg = Registry(model_dir)
    store = SQLiteL2Store(path)
    versions = {}
    for row in store.iter():
        res = reg.decode_result(row.blob)
        assert res.payload == expected[row.id].payload, row.id
        versions[row.encoder_version] = versions.get(row.encoder_version, 0) + 1
    store.close()
    return versions


def test_dry_run_writes_nothing_and_projects_savings(tmp_path, model_dir):
    db = tmp_path / "l2.sqlite"
    seed(db, 40)
    before = {r.id: r.blob for r in SQLiteL2Store(db).iter()}
    out = migrate(MigrateConfig(store=db, model_dir=model_dir, dry_run=True, progress=False))
    assert out["would_migrate"] > 30 and out["ratio_before_after"] > 1.5 and "migrated" not in out
    assert {r.id: r.blob for r in SQLiteL2Store(db).iter()} == before


def test_migration_is_verified_and_skips_cut_previews(tmp_path, model_dir):
    db = tmp_path / "l2.sqlite"
    expected = seed(db, 40)
    out = migrate(MigrateConfig(store=db, model_dir=model_dir, batch_size=8, progress=False))
    assert out["skipped_truncated_preview"] == 1 and out["migrated"] + out.get("unchanged", 0) == 40
    versions = check_all(db, model_dir, expected)
    # every row is rewritten in the v1 format; the tiny test model's losses stay stub blobs (fallback "larger")
    assert versions.get("v1", 0) >= 10 and versions.get("v1", 0) + versions.get("stub", 0) == 40 and versions["legacy"] == 1
    again = migrate(MigrateConfig(store=db, model_dir=model_dir, progress=False))
    assert again.get("migrated", 0) == 0 and again["already_at_target"] == versions["v1"]


def test_a_verification_failure_keeps_the_old_blob(tmp_path, model_dir, monkeypatch):
    db = tmp_path / "l2.sqlite"
    expected = seed(db, 12)
    reg = Registry(model_dir)
    real = reg.encode_many

    def corrupting_encode(payloads, *a, **k):  # the new blobs hold something else than the old ones
        return real([p + "!" if isinstance(p, str) else {"tampered": p} for p in payloads], *a, **k)

    monkeypatch.setattr(reg, "encode_many", corrupting_encode)
    out = migrate(MigrateConfig(store=db, model_dir=model_dir, progress=False), registry=reg)
    assert out["verify_failed"] >= 10 and not out.get("migrated")
    assert "v1" not in check_all(db, model_dir, expected)


def test_threads_change_nothing_but_the_time(tmp_path, model_dir, monkeypatch):
    """A migration splits each batch over codec worker threads (``threads``; default $NBMF_THREADS, else every
    CPU): the store ends byte for byte as with one thread."""
    stores = {}
    for threads in (1, 2):
        db = tmp_path / f"l2_{threads}.sqlite"
        seed(db, 24)
        out = migrate(MigrateConfig(store=db, model_dir=model_dir, batch_size=12, progress=False, threads=threads))
        assert out["threads"] == threads and out["migrated"] > 10
        stores[threads] = {r.id: r.blob for r in SQLiteL2Store(db).iter()}
    assert stores[1] == stores[2]
    assert Registry(model_dir, threads=2).codec("v1").threads == 2  # the registry hands them to each codec it loads
    db = tmp_path / "l2_default.sqlite"
    seed(db, 4)
    monkeypatch.delenv("NBMF_THREADS", raising=False)
    out = migrate(MigrateConfig(store=db, model_dir=model_dir, dry_run=True, progress=False))
    assert out["threads"] == len(os.sched_getaffinity(0))
    monkeypatch.setenv("NBMF_THREADS", "1")
    assert migrate(MigrateConfig(store=db, model_dir=model_dir, dry_run=True, progress=False))["threads"] == 1


def test_cli_refuses_zero_threads(tmp_path, model_dir):
    db = tmp_path / "l2.sqlite"
    seed(db, 2)
    done = subprocess.run([sys.executable, "-m", "nbmf", "migrate", str(db), "--model-dir", str(model_dir),
                           "--threads", "0"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--threads must be >= 1" in done.stderr


def test_kill_minus_9_at_any_moment_loses_nothing(tmp_path, model_dir):
    db = tmp_path / "l2.sqlite"
    expected = seed(db, 120)
    cmd = [sys.executable, "-m", "nbmf", "migrate", str(db), "--model-dir", str(model_dir), "--batch-size", "8",
           "--no-progress"]
    env = dict(os.environ, NBMF_MIGRATE_PAUSE_S="0.3")
    mids = []
    for delay in (2.0, 5.0, 8.0):
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        mids.append(check_all(db, model_dir, expected).get("v1", 0))  # every row still decodes exactly
    assert max(mids) > 0  # the kills landed mid-migration, not only before it started
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    versions = check_all(db, model_dir, expected)
    assert versions.get("v1", 0) + versions.get("stub", 0) + versions.get("legacy", 0) == len(expected)
    # left as legacy: the cut preview, and semantic JSON previews whose re-canonicalized form differs (kept)
    assert versions.get("legacy", 0) <= 3 and versions.get("v1", 0) >= 30


def test_at_target_means_target_version_and_the_format_written(tmp_path, monkeypatch):
    """Rows of the target version in an older blob format are re-encoded; legacy rows never count as done."""
    import nbmf.blob
    from nbmf.migrate import at_target

    db = tmp_path / "l2.sqlite"
    stub = Registry(None)  # target: the stub, so the test needs no model
    payloads = {f"s{i}": {"n": i, "text": f"record {i}"} for i in range(6)}
    with SQLiteL2Store(db) as store:
        for rid, p in payloads.items():
            store.put(rid, stub.encode(p))
        # a legacy blob whose version column claims the target (a hand-edited or mislabelled row)
        store.put("mislabelled", json.dumps(legacy_blob("legacy text")).encode(), encoder_version="stub")
        assert not at_target(store.get("mislabelled"), "stub")
    out = migrate(MigrateConfig(store=db, progress=False), registry=stub)
    assert out["already_at_target"] == len(payloads) and out["migrated"] == 1

    written = nbmf.blob.format_of(SQLiteL2Store(db).get("s0").blob)
    monkeypatch.setattr(nbmf.blob, "FORMAT_WRITTEN", written + 1)  # as if a newer format had landed
    out = migrate(MigrateConfig(store=db, progress=False), registry=stub)
    assert "already_at_target" not in out and out.get("migrated", 0) + out.get("unchanged", 0) == len(payloads) + 1
    with SQLiteL2Store(db) as store:
        assert {rid: stub.decode(store.get(rid).blob) for rid in payloads} == payloads
