"""`nbmf migrate SERVICE_DIR --into L2`: the memory service's store into an NBMF L2 store, each record encoded with
its domain's version, verified, resumable after kill -9, the source untouched, bad files counted."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import nbmf
from helpers.artifacts import sample_records
from helpers.model_dirs import two_versions
from helpers.service_store import write_blob, write_record
from nbmf.bench.anchors import legacy_blob
from nbmf.cli import main
from nbmf.data.store import SQLiteL2Store
from nbmf.migrate_service import ServiceMigrateConfig, migrate_service
from nbmf.payload import canonical, to_raw
from nbmf.registry import Registry

ROOT = Path(__file__).resolve().parents[2]
VAL = ROOT / "data" / "sample" / "val.jsonl"
SECRET = b"service secret for the tests"
KEY = hashlib.sha256(SECRET).digest()
ENV = {"DAENA_MEMORY_AES_KEY": base64.urlsafe_b64encode(SECRET).decode()}
TENANTS = ("default", "acme", "globex")  # domains general, acme (v2 of its own), globex (the default, v1)
CLASSES = ("legal", "finance", "pii", "chat", "ops_log", "research_note")
SEMANTIC = ("chat", "ops_log", "research_note")


def build_store(root: Path, n: int) -> dict:
    """``n`` records over every tenant and class, every other one encrypted, plus a corrupt file, a file written
    with another key and an old placeholder blob in blobs/; returns what the tests expect of the store."""
    expected, plain_bytes = {}, {}
    for i, rec in enumerate(sample_records(VAL, limit=n)):
        tenant, cls = TENANTS[i % len(TENANTS)], CLASSES[(i // len(TENANTS)) % len(CLASSES)]
        encrypted = i % 2 == 1
        path = write_record(root, f"mem/{i}", cls, rec["data"], tenant=tenant, key=KEY if encrypted else None)
        raw, kind = to_raw(rec["data"])
        semantic = cls in SEMANTIC
        expected[path.stem] = {"raw": canonical(raw, kind) if semantic else raw, "kind": kind,
                               "fidelity": "semantic" if semantic else "lossless", "class": cls,
                               "domain": "general" if tenant == "default" else tenant}
        doc = {"payload": rec["data"], "meta": {"tenant_id": tenant, "created_at": "2025-01-01T00:00:00Z"}, "cls": cls}
        plain_bytes[path.stem] = len(json.dumps(doc).encode()) if encrypted else path.stat().st_size
    (root / "records" / "broken__chat.json").write_text('{"payload": {"a": ')
    write_record(root, "w/1", "pii", {"secret": "s"}, tenant="acme", key=hashlib.sha256(b"another key").digest())
    placeholder = legacy_blob({"role": "user", "content": "placeholder"})
    placeholder["meta"].update(encoder_version="production_placeholder", encoder_domain="legal")
    write_blob(root, "placeholder", placeholder)
    return {"records": expected, "plain_bytes": plain_bytes, "bad": 2}


def source_hashes(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def check_rows(db: Path, models: Path, expected: dict) -> dict:
    """Every row decodes to its record's exact bytes, with its domain's version (or the stub); writers by domain."""
    reg = Registry(models)
    writers: dict = {}
    with SQLiteL2Store(db, read_only=True) as store:
        for row in store.iter():
            want = expected[row.id]
            res = reg.decode_result(row.blob)
            assert (res.raw, res.kind, res.fidelity.label) == (want["raw"], want["kind"], want["fidelity"]), row.id
            assert (row.domain, row.record_class) == (want["domain"], want["class"]), row.id
            assert res.version in ("stub", "v2" if row.domain == "acme" else "v1"), (row.id, res.version)
            assert row.encoder_version == res.version
            writers.setdefault(row.domain, {}).setdefault(res.version, 0)
            writers[row.domain][res.version] += 1
    return writers


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return two_versions(tmp_path_factory.mktemp("svc-models") / "models", {"acme": "v2"})


@pytest.fixture
def store(tmp_path):
    root = tmp_path / "warm"
    return {"root": root, **build_store(root, 36)}


def run(store, models, db, environ=ENV, **kw):
    kw.setdefault("progress", False)
    return migrate_service(ServiceMigrateConfig(source=store["root"], dest=db, model_dir=models, **kw),
                           environ=environ)


def test_every_record_migrated_verified_and_the_source_untouched(store, models, tmp_path):
    db = tmp_path / "l2.sqlite"
    before = source_hashes(store["root"])
    out = run(store, models, db, batch_size=8)
    assert source_hashes(store["root"]) == before
    n = len(store["records"])
    assert (out["files"], out["records"], out["migrated"], out["bad_files"]) == (n + 2, n, n, store["bad"])
    assert "verify_failed" not in out and "already_migrated" not in out
    writers = check_rows(db, models, store["records"])
    assert sum(sum(w.values()) for w in writers.values()) == n
    assert writers["acme"].get("v2", 0) >= 6 and writers["globex"].get("v1", 0) >= 6  # the neural coders won most
    assert out["by_domain"] == {"acme": {"version": "v2", "records": 12}, "general": {"version": "v1", "records": 12},
                                "globex": {"version": "v1", "records": 12}}
    with SQLiteL2Store(db) as s:
        assert out["bytes_after"] == sum(len(r.blob) for r in s.iter())
    assert out["bytes_before"] == sum(store["plain_bytes"].values())
    assert out["payload_bytes"] == sum(len(r["raw"]) for r in store["records"].values())
    # the measured figures (baseline: the same records' plain JSON, as the service stores them, in the same run)
    assert out["ratio_before_after"] == round(out["bytes_before"] / out["bytes_after"], 3) > 1.5
    assert out["blobs_not_migrated"] == 1
    # the service's old placeholder blob decodes as a legacy blob
    res = nbmf.decode_result((store["root"] / "blobs" / "placeholder.json").read_bytes())
    assert res.legacy and res.payload == {"role": "user", "content": "placeholder"}

    again = run(store, models, db)
    assert again["already_migrated"] == n and again.get("migrated", 0) == 0
    assert (again["bytes_before"], again["bytes_after"]) == (out["bytes_before"], out["bytes_after"])
    assert source_hashes(store["root"]) == before


def test_a_rerun_redoes_changed_files_and_changed_domain_versions(store, models, tmp_path):
    db = tmp_path / "l2.sqlite"
    first = run(store, models, db)
    # the service rewrote one record since: only it is migrated again
    path = write_record(store["root"], "mem/0", "legal", {"changed": "after the migration"})
    store["records"][path.stem].update(raw=to_raw({"changed": "after the migration"})[0])
    out = run(store, models, db)
    assert out["migrated"] == 1 and out["already_migrated"] == len(store["records"]) - 1
    check_rows(db, models, store["records"])

    # acme moves to another version: its rows written by v2 are re-encoded, stub-written ones stay as they are
    models_moved = two_versions(tmp_path / "moved", {"acme": "v1"})
    v2_rows = first["by_writer"].get("v2", 0) + first["by_writer"].get("v2:fallback", 0)
    out = run(store, models_moved, db)
    assert out["migrated"] == v2_rows and out["by_domain"]["acme"]["version"] == "v1"
    with SQLiteL2Store(db) as s:
        assert {r.encoder_version for r in s.iter() if r.domain == "acme"} <= {"v1", "stub"}


def test_dry_run_writes_nothing(store, models, tmp_path):
    db = tmp_path / "l2.sqlite"
    out = run(store, models, db, dry_run=True)
    assert out["would_migrate"] == len(store["records"]) and out["ratio_before_after"] > 1.5
    with SQLiteL2Store(db) as s:
        assert s.count() == 0


def test_a_verification_failure_writes_nothing_for_that_record(store, models, tmp_path, monkeypatch, capsys):
    reg = Registry(models)
    real = reg.encode_many

    def tampering(payloads, *a, **k):
        return real([p + "!" if isinstance(p, str) else p for p in payloads], *a, **k)

    monkeypatch.setattr(reg, "encode_many", tampering)
    db = tmp_path / "l2.sqlite"
    out = migrate_service(ServiceMigrateConfig(source=store["root"], dest=db, progress=False), registry=reg,
                          environ=ENV)
    texts = sum(r["kind"].label == "text" for r in store["records"].values())
    assert texts > 0 and out["verify_failed"] == texts and out["migrated"] == len(store["records"]) - texts
    assert capsys.readouterr().err.count("does not decode to the record's bytes") == texts
    check_rows(db, models, store["records"])  # only verified rows were written


def test_cli_without_the_key_counts_encrypted_files_as_bad(store, models, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DAENA_MEMORY_AES_KEY", raising=False)
    db = tmp_path / "l2.sqlite"
    rc = main(["migrate", str(store["root"]), "--into", str(db), "--model-dir", str(models), "--no-progress"])
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    encrypted = len(store["records"]) // 2
    assert rc == 1 and out["bad_files"] == encrypted + store["bad"] and out["migrated"] == encrypted
    assert captured.err.count("set DAENA_MEMORY_AES_KEY") == encrypted + 1  # + the file of another key
    assert main(["migrate", str(store["root"]), "--model-dir", str(models)]) == 2
    assert "--into" in capsys.readouterr().err
    assert main(["migrate", str(store["root"]), "--into", str(store["root"] / "l2.sqlite")]) == 2
    assert "never writes" in capsys.readouterr().err


def test_kill_minus_9_at_any_moment_then_rerun(tmp_path, models):
    root = tmp_path / "warm"
    built = build_store(root, 60)
    before = source_hashes(root)
    db = tmp_path / "l2.sqlite"
    cmd = [sys.executable, "-m", "nbmf", "migrate", str(root), "--into", str(db), "--model-dir", str(models),
           "--batch-size", "4", "--no-progress"]
    env = {**os.environ, **ENV, "NBMF_MIGRATE_PAUSE_S": "0.3"}

    def rows() -> int:
        try:
            with SQLiteL2Store(db, read_only=True) as s:
                return s.count()
        except (FileNotFoundError, sqlite3.OperationalError):  # not created yet, or killed before its table was
            return 0

    seen = [0]
    for more in (None, 1, 8, 12):  # kill at once (before anything is written), then after more and more rows
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if more is None:
            time.sleep(1.0)
        deadline = time.time() + 120
        while more is not None and rows() < seen[-1] + more and p.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        if rows():
            check_rows(db, models, built["records"])  # every row written is whole and exact
        seen.append(rows())
    assert 0 < seen[-1] < len(built["records"]), seen  # the kills landed mid-migration
    done = subprocess.run(cmd, env={**os.environ, **ENV}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr  # 1: the corrupt file and the file of another key
    out = json.loads(done.stdout)
    assert out["records"] == len(built["records"]) and out["already_migrated"] == seen[-1]
    assert out["migrated"] == len(built["records"]) - seen[-1] and out["bad_files"] == built["bad"]
    writers = check_rows(db, models, built["records"])
    assert sum(sum(w.values()) for w in writers.values()) == len(built["records"])
    assert source_hashes(root) == before
