"""The L2 store: where the memory service keeps NBMF blobs, one row per memory record.

`L2Store` is the interface the collector, the service and migration code against;
`SQLiteL2Store` is the embedded implementation (WAL mode, so readers such as `nbmf collect`
run while the service writes). Legacy blobs are stored as the UTF-8 bytes of their JSON text.
Rows are returned as stored: SQLite lets any value into the blob column of a table another tool
wrote (its BLOB affinity converts nothing), so `L2Row.blob` of such a row may be a str, a number or
None, and readers report it as a bad row instead of trusting it.

>>> store = SQLiteL2Store(":memory:")
>>> store.put("r1", b'{"meta": {}}', domain="general", record_class="document", encoder_version="legacy")
>>> store.get("r1").encoder_version, store.count()
('legacy', 1)
>>> store.close()
"""

from __future__ import annotations

import abc
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from nbmf.blob import blob_version  # the encoder version column is what the blob's header says

__all__ = ["L2Row", "L2Store", "SQLiteL2Store", "blob_version"]


@dataclass(frozen=True)
class L2Row:
    id: str
    domain: str
    record_class: str
    blob: bytes  # as stored: not bytes only in a row another tool wrote (readers must check)
    encoder_version: str
    created_at: str  # ISO-8601 UTC
    updated_at: str


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


class L2Store(abc.ABC):
    """Key -> blob store of memory records. Implementations must be safe for one writer and
    concurrent readers; `replace_if_unchanged` is the compare-and-swap migration relies on."""

    @abc.abstractmethod
    def put(self, id: str, blob: bytes, *, domain: str = "general", record_class: str = "",
            encoder_version: str | None = None) -> None:
        """Insert or overwrite one record (encoder_version None: read it from the blob)."""

    def put_many(self, rows) -> None:
        """Insert or overwrite ``(id, blob, domain, record_class)`` rows (encoder version read from each blob).
        Implementations that can write them in one transaction (all or none) should; this default puts each."""
        for id, blob, domain, record_class in rows:
            self.put(id, blob, domain=domain, record_class=record_class)

    @abc.abstractmethod
    def get(self, id: str) -> L2Row | None:
        """The row, or None when the id is absent."""

    @abc.abstractmethod
    def iter(self, *, batch_size: int = 1000, after: str | None = None) -> Iterator[L2Row]:
        """Every row in id order, fetched in batches (never the whole store in memory)."""

    @abc.abstractmethod
    def count(self) -> int:
        """Number of rows."""

    @abc.abstractmethod
    def replace_if_unchanged(self, id: str, old_blob: bytes, new_blob: bytes, *,
                             encoder_version: str | None = None) -> bool:
        """Swap the blob only if it still equals `old_blob`; True when swapped."""

    def close(self) -> None:
        """Release resources (default: nothing to release)."""

    def __enter__(self) -> "L2Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id TEXT PRIMARY KEY,
    domain TEXT NOT NULL,
    record_class TEXT NOT NULL,
    blob BLOB NOT NULL,
    encoder_version TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
)
"""
_COLS = "id, domain, record_class, blob, encoder_version, created_at, updated_at"


class SQLiteL2Store(L2Store):
    """L2 store in one SQLite file. One connection guarded by a lock, so a store object may be
    shared by threads; separate processes open their own store objects (WAL allows that)."""

    def __init__(self, path: str | Path, *, timeout_s: float = 30.0, read_only: bool = False):
        self.path = str(path)
        if read_only:
            if not Path(self.path).is_file():
                raise FileNotFoundError(f"L2 store {self.path} does not exist")
            uri = f"{Path(self.path).resolve().as_uri()}?mode=ro"
            self._conn = sqlite3.connect(uri, uri=True, timeout=timeout_s, check_same_thread=False)
        else:
            self._conn = sqlite3.connect(self.path, timeout=timeout_s, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(_SCHEMA)
            self._conn.commit()
        self._lock = threading.Lock()

    _UPSERT = ("INSERT INTO records (" + _COLS + ") VALUES (?, ?, ?, ?, ?, ?, ?) "
               "ON CONFLICT(id) DO UPDATE SET domain=excluded.domain, "
               "record_class=excluded.record_class, blob=excluded.blob, "
               "encoder_version=excluded.encoder_version, updated_at=excluded.updated_at")

    @staticmethod
    def _row(id, blob, domain, record_class, encoder_version=None) -> tuple:
        if not isinstance(id, str) or not id:
            raise ValueError("record id must be a non-empty str")
        blob = bytes(blob)
        now = _now()
        return (id, domain, record_class, blob, encoder_version or blob_version(blob), now, now)

    def put(self, id, blob, *, domain="general", record_class="", encoder_version=None):
        row = self._row(id, blob, domain, record_class, encoder_version)
        with self._lock, self._conn:
            self._conn.execute(self._UPSERT, row)

    def put_many(self, rows):
        """One transaction: after a crash (kill -9 included) the store holds all of these rows or none."""
        values = [self._row(*r) for r in rows]
        with self._lock, self._conn:
            self._conn.executemany(self._UPSERT, values)

    def get(self, id):
        with self._lock:
            row = self._conn.execute(f"SELECT {_COLS} FROM records WHERE id = ?", (id,)).fetchone()
        return None if row is None else L2Row(*row)

    def iter(self, *, batch_size=1000, after=None):
        # Keyset pagination: each batch is its own short read, so writers are never blocked
        # for the length of a scan and memory stays at one batch.
        last = after
        while True:
            with self._lock:
                if last is None:
                    rows = self._conn.execute(
                        f"SELECT {_COLS} FROM records ORDER BY id LIMIT ?", (batch_size,)).fetchall()
                else:
                    rows = self._conn.execute(
                        f"SELECT {_COLS} FROM records WHERE id > ? ORDER BY id LIMIT ?",
                        (last, batch_size)).fetchall()
            if not rows:
                return
            for row in rows:
                # sqlite3 returns a BLOB as bytes; anything else passes through for the caller to report
                # (bytes(5) would make five zero bytes, bytes(None) would end the scan)
                yield L2Row(*row)
            last = rows[-1][0]

    def count(self):
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]

    def replace_if_unchanged(self, id, old_blob, new_blob, *, encoder_version=None):
        new_blob = bytes(new_blob)
        version = encoder_version or blob_version(new_blob)
        with self._lock, self._conn:
            cur = self._conn.execute(
                "UPDATE records SET blob = ?, encoder_version = ?, updated_at = ? "
                "WHERE id = ? AND blob = ?",
                (new_blob, version, _now(), id, bytes(old_blob)),
            )
        return cur.rowcount == 1

    def close(self):
        with self._lock:
            self._conn.close()
