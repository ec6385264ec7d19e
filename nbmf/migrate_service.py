"""`nbmf migrate SERVICE_DIR --into L2.sqlite`: the memory service's warm tier into an NBMF L2 store, verified.

The service keeps one JSON file per record (``records/<key>__<cls>.json``, plain or AES-GCM: nbmf/data/service.py
reads and decrypts them, as `nbmf collect` does). Each file becomes one L2 row:

    id            the file name without .json (``<key>__<cls>``: the service's own name for the record)
    domain        the tenant ("default" -> general), as `nbmf collect` maps it
    record_class  the service's class
    blob          the payload encoded with the domain's version (``nbmf current --domain``; else CURRENT) at the
                  class's fidelity (the service's policy; --class-fidelity changes it)

Every blob is decoded before it is written and must give back the record's exact raw bytes (a semantic record:
its canonical form), kind and fidelity; one that does not is counted (verify_failed) and not written. A batch of
rows is written in one SQLite transaction, so killing the run at any moment (kill -9) leaves the store holding
whole verified batches; a rerun skips every row that already holds the source's content (the blob's content
checksum against the file's bytes) written by its domain's version, and finishes the rest. A source file changed
since it was migrated is migrated again. The source is only read: no file of it is written, renamed or deleted.

A file that cannot be read, decrypted (no or another DAENA_MEMORY_AES_KEY) or parsed is a bad file: reported on
stderr ("nbmf migrate: PATH: reason", never decrypted content), counted, skipped; the exit status is then 1.
``blobs/`` holds no records and is not migrated (its old stub blobs decode as legacy blobs with nbmf.decode).
The report: counts, and bytes before (the plain JSON text of each record: the decrypted text of an encrypted
file) and after (the blobs), over every record the store holds for the source after the run.
"""
from __future__ import annotations

import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from nbmf import blob as blobfmt
from nbmf.data import service
from nbmf.errors import NBMFError
from nbmf.extras import require
from nbmf.migrate import one_by_one_on_failure
from nbmf.payload import from_raw


@dataclass(frozen=True)
class ServiceMigrateConfig:
    source: Path  # the service's store: the directory holding records/
    dest: Path  # SQLite L2 store, created when absent
    model_dir: Path | None = None  # None: $NBMF_MODEL_DIR or the repository's models/
    version: str | None = None  # one version for every domain; None: each domain's own (else CURRENT)
    class_fidelity: tuple[tuple[str, str], ...] = ()  # over the service's policy (service.CLASS_FIDELITY)
    batch_size: int = 64  # files per batch: one encode call per (version, fidelity), one transaction
    dry_run: bool = False  # encode and verify, write nothing
    progress: bool = True
    threads: int | None = None  # codec worker threads; None: $NBMF_THREADS, else every CPU (same bytes at any count)


def row_id(path: Path) -> str:
    return path.stem


def holds(reg, row, entry, target: str) -> bool:
    """Whether an L2 row already holds this entry as the migration writes it: the target's blob (neural or its
    zstd fallback) in the format new blobs are written in, of the record's domain, class, kind and fidelity, whose
    content checksum matches the file's bytes. A stub-written row is re-encoded (and left as it is when the
    result is the same blob)."""
    rec = entry.record
    if not isinstance(row.blob, bytes) or (row.domain, row.record_class) != (rec.domain, entry.cls):
        return False
    try:
        if blobfmt.format_of(row.blob) != blobfmt.FORMAT_WRITTEN:
            return False
        header, _ = blobfmt.unpack(row.blob)
        if header.version != target or (header.kind, header.fidelity) != (rec.kind, rec.fidelity):
            return False
        codec = reg.fallback(header.encoder_id) if header.fallback else reg.codec(header.encoder_id)
        if codec is None:
            return False
        blobfmt.check_content(header, rec.raw, codec.fingerprint)
    except NBMFError:
        return False
    return True


def migrate_service(cfg: ServiceMigrateConfig, registry=None, environ=os.environ) -> dict:
    from nbmf.codecs.neural import default_threads
    from nbmf.data.store import SQLiteL2Store
    from nbmf.registry import Registry, default_model_dir

    tqdm = require("tqdm").tqdm
    source, dest = Path(cfg.source), Path(cfg.dest)
    if not (source / "records").is_dir():
        raise FileNotFoundError(f"{source} is not a memory-service store: it has no records/ directory")
    if dest.resolve().is_relative_to(source.resolve()):
        raise ValueError(f"the L2 store {dest} lies inside the source {source}, which migration never writes: "
                         "put it elsewhere")
    threads = default_threads(bulk=True) if cfg.threads is None else cfg.threads
    reg = registry or Registry(cfg.model_dir or default_model_dir(), threads=threads)
    targets = {cfg.version} if cfg.version else {reg.current, *reg.domains.values()}
    for version in sorted(targets):
        reg.codec(version)  # fail now, not mid-store, if a version records would be written with cannot load
    policy = {**service.CLASS_FIDELITY, **dict(cfg.class_fidelity)}
    key = service.key_from(environ)
    src_name = service.source_name(source)
    files = service.record_files(source)
    store = SQLiteL2Store(dest)
    stats: Counter = Counter()
    by_domain: dict[str, Counter] = {}
    by_writer: Counter = Counter()
    pause = float(environ.get("NBMF_MIGRATE_PAUSE_S", "0"))  # test hook: widen the window a kill lands in
    bar = tqdm(total=len(files), desc="migrate service", unit="file", file=sys.stderr, disable=not cfg.progress)
    t0 = time.time()

    def bad(path, step: str, reason: str) -> None:
        stats["bad_files" if step == "bad_file" else step] += 1
        print(f"nbmf migrate: {path}: {reason}", file=sys.stderr)

    def count(entry, blob: bytes, target: str) -> None:
        rec = entry.record
        stats["records"] += 1
        stats["bytes_before"] += entry.plain_bytes
        stats["payload_bytes"] += len(rec.raw)
        stats["bytes_after"] += len(blob)
        header = blobfmt.peek_header(blob)
        by_writer[f"{header.version}:fallback" if header.fallback else header.version] += 1
        d = by_domain.setdefault(rec.domain, Counter(version=target))
        d["records"] += 1

    def target_of(entry) -> str:
        return cfg.version or reg.version_for(entry.record.domain)

    def flush(paths) -> None:
        entries = []
        for path in paths:
            try:
                stats["source_file_bytes"] += path.stat().st_size
                entries.append((path, service.read_entry(path, src_name, key, policy)))
            except service.BadFile as e:
                bad(path, "bad_file", str(e))
            except OSError as e:  # vanished or unreadable: that file's failure
                bad(path, "bad_file", f"{type(e).__name__}: {e.strerror or e}")
        todo: dict[tuple[str, str], list] = {}
        for path, entry in entries:
            row = store.get(row_id(path))
            target = target_of(entry)
            if row is not None and holds(reg, row, entry, target):
                stats["already_migrated"] += 1
                count(entry, row.blob, target)
                continue
            todo.setdefault((target, entry.record.fidelity.label), []).append((path, entry, row))
        writes = []
        for (target, fidelity), part in todo.items():
            for (path, entry, row), blob in zip(part, _encode(reg, part, target, fidelity, bad)):
                if blob is None:
                    continue
                if row is not None and row.blob == blob:
                    stats["already_migrated"] += 1  # a record the target cannot shrink: the stub's blob is there
                else:
                    writes.append((row_id(path), blob, entry.record.domain, entry.cls))
                count(entry, blob, target)
        if writes and not cfg.dry_run:
            store.put_many(writes)
        stats["would_migrate" if cfg.dry_run else "migrated"] += len(writes)
        bar.update(len(paths))
        if pause:
            time.sleep(pause)

    try:
        for i in range(0, len(files), max(cfg.batch_size, 1)):
            flush(files[i:i + cfg.batch_size])
    finally:
        bar.close()
        store.close()
    out = {"source": str(source), "dest": str(dest), "files": len(files), **stats,
           "by_domain": {d: dict(c) for d, c in sorted(by_domain.items())}, "by_writer": dict(by_writer),
           "blobs_not_migrated": len(list((source / "blobs").glob("*.json"))) if (source / "blobs").is_dir() else 0,
           "dry_run": cfg.dry_run, "seconds": round(time.time() - t0, 1), "threads": reg.threads or default_threads()}
    if stats["bytes_after"]:
        out["ratio_before_after"] = round(stats["bytes_before"] / stats["bytes_after"], 3)
        out["ratio_payload_after"] = round(stats["payload_bytes"] / stats["bytes_after"], 3)
    return out


def _encode(reg, part, target: str, fidelity: str, bad) -> list:
    """Verified blob (or None) per ``(path, entry, row)`` of ``part``: one batch call, then one file at a time if
    it raises, so a payload the codec refuses costs only its own file. Verified: the blob decodes to the record's
    exact raw bytes, kind and fidelity."""
    def once(items) -> list:
        recs = [entry.record for _, entry, _ in items]
        blobs = reg.encode_many([from_raw(r.raw, r.kind) for r in recs], fidelity=fidelity, version=target,
                                kinds=[r.kind for r in recs])
        out = []
        for (path, _, _), rec, blob, res in zip(items, recs, blobs, reg.decode_many(blobs)):
            if (res.raw, res.kind, res.fidelity) == (rec.raw, rec.kind, rec.fidelity):
                out.append(blob)
            else:
                bad(path, "verify_failed", "the encoded blob does not decode to the record's bytes: not written")
                out.append(None)
        return out

    def failed(item, e) -> list:
        bad(item[0], "encode_failed", f"{type(e).__name__} while encoding (details withheld: they may quote the "
                                      "record); the file is not migrated")
        return [None]  # its place in ``part``: not written

    return one_by_one_on_failure(once, part, failed)
