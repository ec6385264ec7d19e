"""SQLite L2 store: CRUD, id-ordered batched iteration, compare-and-swap, WAL, version detection."""

import json
import sqlite3
import threading

import pytest

import nbmf
from nbmf.bench.anchors import legacy_blob
from nbmf.data.store import L2Store, SQLiteL2Store, blob_version


@pytest.fixture
def store(tmp_path):
    with SQLiteL2Store(tmp_path / "l2.sqlite") as s:
        yield s


def test_put_get_count_and_versions(store):
    stub = nbmf.encode("hello memory", version="stub")
    legacy = json.dumps(legacy_blob({"a": 1})).encode()
    store.put("b", stub, domain="ops", record_class="document")
    store.put("a", legacy, record_class="structured")
    assert store.count() == 2
    row = store.get("b")
    assert (row.id, row.domain, row.record_class, row.blob, row.encoder_version) == (
        "b", "ops", "document", stub, "stub")
    assert store.get("a").encoder_version == "legacy"
    assert store.get("missing") is None
    assert isinstance(store, L2Store)


def test_blob_version_reads_the_header():
    assert blob_version(nbmf.encode({"k": [1, 2]}, version="stub")) == "stub"
    assert blob_version(b'{"meta": {}, "code": "", "sig": ""}') == "legacy"


def test_upsert_keeps_created_at_and_moves_updated_at(store):
    store.put("x", nbmf.encode("one", version="stub"))
    first = store.get("x")
    store.put("x", nbmf.encode("two", version="stub"))
    second = store.get("x")
    assert store.count() == 1
    assert second.created_at == first.created_at
    assert second.updated_at >= first.updated_at
    assert nbmf.decode(second.blob) == "two"


def test_iter_is_id_ordered_and_batched(store):
    ids = [f"r{i:03d}" for i in range(25)]
    for i in reversed(ids):
        store.put(i, nbmf.encode(i, version="stub"))
    assert [r.id for r in store.iter(batch_size=4)] == ids
    assert [r.id for r in store.iter(batch_size=7, after="r020")] == ids[21:]


def test_replace_if_unchanged_is_compare_and_swap(store):
    old = json.dumps(legacy_blob("text")).encode()
    store.put("m", old)
    new = nbmf.encode("text", version="stub")
    assert store.replace_if_unchanged("m", old, new) is True
    assert store.get("m").blob == new and store.get("m").encoder_version == "stub"
    # A second migration attempt against the stale blob must not overwrite the new one.
    assert store.replace_if_unchanged("m", old, nbmf.encode("other", version="stub")) is False
    assert store.get("m").blob == new
    assert store.replace_if_unchanged("absent", old, new) is False


def test_wal_mode_and_concurrent_reader(tmp_path):
    path = tmp_path / "wal.sqlite"
    writer = SQLiteL2Store(path)
    assert writer._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    for i in range(50):
        writer.put(f"id{i:02d}", nbmf.encode(i, version="stub"))
    reader = SQLiteL2Store(path, read_only=True)
    seen = []

    def read():
        seen.extend(r.id for r in reader.iter(batch_size=10))

    t = threading.Thread(target=read)
    t.start()
    for i in range(50, 60):  # writes proceed while the reader scans
        writer.put(f"id{i:02d}", nbmf.encode(i, version="stub"))
    t.join(10)
    assert len(seen) >= 50 and seen == sorted(seen)
    with pytest.raises(sqlite3.OperationalError):
        reader.put("nope", nbmf.encode(1, version="stub"))  # read-only really is read-only
    reader.close()
    writer.close()


def test_bad_arguments(tmp_path, store):
    with pytest.raises(ValueError):
        store.put("", nbmf.encode("x", version="stub"))
    with pytest.raises(FileNotFoundError):
        SQLiteL2Store(tmp_path / "absent.sqlite", read_only=True)


@pytest.mark.parametrize("value", ["json text", 5, 1.5], ids=["str", "int", "float"])
def test_a_non_blob_value_comes_back_as_stored(store, value):
    """SQLite lets any value into the blob column (BLOB affinity converts nothing): rows return it as it is, for
    readers to report, and the scan goes on past it (bytes() of it would raise, or make 5 zero bytes)."""
    good = nbmf.encode("kept", version="stub")
    for rid in ("a", "b", "c"):
        store.put(rid, good)
    with store._conn:
        store._conn.execute("UPDATE records SET blob = ? WHERE id = 'b'", (value,))
    assert [(r.id, r.blob) for r in store.iter(batch_size=2)] == [("a", good), ("b", value), ("c", good)]
    assert store.get("b").blob == value and type(store.get("b").blob) is type(value)
