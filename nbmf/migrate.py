"""`nbmf migrate`: re-encode an L2 store's records with a new encoder version, losing nothing.

(`nbmf migrate SERVICE_DIR --into L2.sqlite` migrates the memory service's own store instead:
nbmf/migrate_service.py.)

Each batch: decode every old blob through the registry (legacy blobs included), encode the payloads with
the target version, decode every new blob and compare it to the old payload, then swap it in with a
compare-and-swap per record (only if the row still holds the old blob: concurrent writers win). Killing
it at any moment (kill -9) leaves every row either old or verified-new; rerunning skips rows already at
the target version and finishes the rest. Legacy semantic previews that were cut at 2048 characters
are never re-encoded as if they were whole.

A row is already at the target when its encoder version is the target and its blob is in the format new
blobs are written in (nbmf.blob.FORMAT_WRITTEN); legacy rows never are. A bad row is that row's problem,
never the run's: a blob column that is not bytes, or any exception while decoding, re-encoding or
verifying that one row's payload (the NBMFError family, and whatever the parsing under it raises, e.g.
RecursionError for deep JSON) is reported on stderr ("nbmf migrate: ID: ErrorClass: message"), counted
(bad_rows; by step: blob_not_bytes, undecodable, encode_failed), and the row is left as it is; the exit
status is then 1. A failure of the store itself (locked, disk full, not SQLite) stops the run with exit
status 2; every row is still old or verified-new, so a rerun goes on from there.
"""
from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from nbmf import blob as blobfmt
from nbmf.errors import NBMFError
from nbmf.extras import require


@dataclass(frozen=True)
class MigrateConfig:
    store: Path  # SQLite L2 store
    version: str | None = None  # target encoder version; None: the registry's current
    model_dir: Path | None = None  # model registry; None: $NBMF_MODEL_DIR or the repository's models/
    batch_size: int = 64  # records per encode batch (one model call for the whole batch)
    dry_run: bool = False  # encode and verify, write nothing, report the projected savings
    limit: int | None = None  # stop after examining this many rows not yet at the target (bad rows count)
    progress: bool = True
    threads: int | None = None  # codec worker threads; None: $NBMF_THREADS, else every CPU (same bytes at any count)


def _same(a, b) -> bool:
    return type(a) is type(b) and a == b


def at_target(row, target: str) -> bool:
    """Whether a row needs no work: written by ``target`` in the format new blobs are written in."""
    if row.encoder_version != target or not isinstance(row.blob, bytes):
        return False
    try:
        # read at call time: FORMAT_WRITTEN moves when a new format lands (and tests patch it)
        return blobfmt.format_of(row.blob) == blobfmt.FORMAT_WRITTEN  # "legacy" never equals a format number
    except NBMFError:
        return False  # a header that cannot be read: the decode step reports the row


def _reencode(reg, part, fidelity: str, target: str, bad) -> list:
    """(row, new blob, verified) for each (row, old result) of ``part`` that encodes and decodes back; verified:
    the new blob decodes to the old payload, type and value, and kind. One batch call first (one model call);
    if it raises, one row at a time, so a payload the codec refuses costs only its own row, reported through
    ``bad(row, step, error)``."""
    def once(items):
        new = reg.encode_many([res.payload for _, res in items], fidelity=fidelity, version=target,
                              kinds=[res.kind for _, res in items])
        return [(row, b, _same(check.payload, res.payload) and check.kind == res.kind)
                for (row, res), b, check in zip(items, new, reg.decode_many(new))]

    return one_by_one_on_failure(once, part, lambda item, e: bad(item[0], "encode_failed", e) or [])


def one_by_one_on_failure(once, part: list, failed) -> list:
    """``once(part)`` (one batch call: one model call); if it raises, ``once([item])`` for each item, so one item's
    failure costs only that item: ``failed(item, exception)`` returns the results (a list, maybe empty) that take
    the item's place. Nothing is written meanwhile: the callers write only what came back."""
    try:
        return once(part)
    except Exception:  # which item failed is found below
        pass
    out = []
    for item in part:
        try:
            out += once([item])
        except Exception as e:  # this item's payload alone
            out += failed(item, e)
    return out


def migrate(cfg: MigrateConfig, registry=None) -> dict:
    from nbmf.codecs.neural import default_threads
    from nbmf.data.store import SQLiteL2Store, blob_version
    from nbmf.registry import Registry, default_model_dir

    tqdm = require("tqdm").tqdm

    threads = default_threads(bulk=True) if cfg.threads is None else cfg.threads
    reg = registry or Registry(cfg.model_dir or default_model_dir(), threads=threads)
    target = cfg.version or reg.current
    reg.codec(target)  # fail now, not mid-store, if the target cannot load
    if not Path(cfg.store).is_file():  # opening a missing path would create an empty store and "migrate" it
        raise FileNotFoundError(f"L2 store {cfg.store} does not exist")
    store = SQLiteL2Store(cfg.store)
    stats: Counter = Counter()
    pause = float(os.environ.get("NBMF_MIGRATE_PAUSE_S", "0"))  # test hook: widen the window a kill lands in
    bar = tqdm(total=store.count(), desc=f"migrate -> {target}", unit="rec", file=sys.stderr, disable=not cfg.progress)
    t0 = time.time()

    def bad(row, step: str, e: BaseException) -> None:
        stats["bad_rows"] += 1
        stats[step] += 1
        print(f"nbmf migrate: {row.id}: {type(e).__name__}: {e}", file=sys.stderr)

    def flush(rows):
        decoded = []
        for row in rows:
            if not isinstance(row.blob, bytes):
                bad(row, "blob_not_bytes", TypeError(f"the blob column holds {type(row.blob).__name__}, not bytes "
                                                     "(a row another tool wrote); rewrite or delete the row"))
                continue
            try:
                res = reg.decode_result(row.blob)
            except Exception as e:  # one row's failure, whatever its type: the store is not touched here
                bad(row, "undecodable", e)
                continue
            if res.truncated:
                stats["skipped_truncated_preview"] += 1
                continue
            decoded.append((row, res))
        for fidelity in ("lossless", "semantic"):
            part = [(row, res) for row, res in decoded if res.fidelity.label == fidelity]
            if not part:
                continue
            for row, new, verified in _reencode(reg, part, fidelity, target, bad):
                if not verified:
                    stats["verify_failed"] += 1  # the old blob stays
                    continue
                if new == row.blob:  # a record the target version cannot shrink is already what it would write
                    stats["unchanged"] += 1
                    continue
                written_by = blob_version(new)
                if written_by != target:
                    stats[f"fallback_{written_by}"] += 1
                elif blobfmt.peek_header(new).fallback:
                    stats["fallback_zstd"] += 1  # the target's classical fallback wrote it (its header's bit)
                stats["bytes_before"] += len(row.blob)
                stats["bytes_after"] += len(new)
                if cfg.dry_run:
                    stats["would_migrate"] += 1
                elif store.replace_if_unchanged(row.id, row.blob, new, encoder_version=written_by):
                    stats["migrated"] += 1
                else:
                    stats["changed_concurrently"] += 1
        bar.update(len(rows))
        if pause:
            time.sleep(pause)

    batch, examined = [], 0
    try:
        for row in store.iter(batch_size=max(cfg.batch_size, 256)):
            if at_target(row, target):
                stats["already_at_target"] += 1
                bar.update(1)
                continue
            if cfg.limit is not None and examined >= cfg.limit:
                break
            examined += 1
            batch.append(row)
            if len(batch) >= cfg.batch_size:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
    finally:
        bar.close()
        store.close()
    out = dict(stats)
    out.update(target=target, dry_run=cfg.dry_run, seconds=round(time.time() - t0, 1),
               threads=reg.threads or default_threads())
    if stats["bytes_after"]:
        out["ratio_before_after"] = round(stats["bytes_before"] / stats["bytes_after"], 3)
    return out


def run(args) -> int:
    import json

    from nbmf.data import service

    to_service = args.into is not None or args.service or service.is_store(Path(args.store))
    try:
        if args.threads is not None and args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        if to_service:
            summary = _run_service(args)
        else:
            if args.class_fidelity:
                raise ValueError("--class-fidelity applies to a memory-service store (with --into)")
            summary = migrate(MigrateConfig(store=Path(args.store), version=args.version,
                                            model_dir=Path(args.model_dir) if args.model_dir else None,
                                            batch_size=args.batch_size, dry_run=args.dry_run, limit=args.limit,
                                            progress=not args.no_progress, threads=args.threads))
    except (FileNotFoundError, ValueError) as e:
        print(f"nbmf migrate: error: {e}", file=sys.stderr)
        return 2
    except (sqlite3.Error, OSError) as e:  # the store (or its disk), not a row: nothing sensible to go on with
        where = args.into if to_service else args.store
        print(f"nbmf migrate: error: {where}: {type(e).__name__}: {e}; every row is still old or "
              "verified-new: fix the store (or wait for its lock) and run again to finish", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    bad = summary.get("bad_rows", 0) + sum(summary.get(k, 0) for k in ("bad_files", "verify_failed", "encode_failed"))
    if bad:
        what = "files not migrated" if to_service else "rows left as they were"
        print(f"nbmf migrate: {bad} bad {what} (listed above)", file=sys.stderr)
    return 1 if bad else 0


def _run_service(args) -> dict:
    from nbmf.data.service import parse_class_fidelity
    from nbmf.migrate_service import ServiceMigrateConfig, migrate_service

    if args.into is None:
        raise ValueError(f"{args.store} is a memory-service store: name the NBMF L2 store to fill with --into")
    if args.limit is not None:
        raise ValueError("--limit applies to an SQLite L2 store migrated in place")
    return migrate_service(ServiceMigrateConfig(
        source=Path(args.store), dest=Path(args.into), version=args.version,
        model_dir=Path(args.model_dir) if args.model_dir else None,
        class_fidelity=parse_class_fidelity(args.class_fidelity), batch_size=args.batch_size, dry_run=args.dry_run,
        progress=not args.no_progress, threads=args.threads))


EPILOG = """examples:
  nbmf migrate store.sqlite --version v2                     # re-encode an L2 store in place
  DAENA_MEMORY_AES_KEY=... nbmf migrate /var/lib/memory/warm --into l2.sqlite   # the memory service's store

memory-service stores (a directory holding records/<key>__<cls>.json, found by layout or forced with --service):
each file becomes one row of the --into store (created when absent; id <key>__<cls>, domain the tenant, class the
service's class), encoded with its domain's version (`nbmf current --domain`; else CURRENT) at its class's
fidelity, decoded and compared with the record's exact bytes before it is written, in one transaction per batch.
Kill it at any moment and run it again: rows already holding the file's content are skipped. The source is only
read. Encrypted files need DAENA_MEMORY_AES_KEY; decrypted text goes only into the --into store. Files that cannot
be read or decrypted are reported (path and reason) and counted, and the exit status is 1. The JSON report counts
records, bad files, rows migrated now and before, and bytes before (plain JSON) and after (blobs).

exit status: 0 done; 1 some rows or files were bad (listed on stderr; the rest is done); 2 usage error, or the
store cannot be used (run again once it can: nothing is half-written)."""


def register(sub) -> None:
    p = sub.add_parser("migrate", help="re-encode an L2 store, or move the memory service's store into one "
                                       "(verified, resumable)",
                       description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("store", help="SQLite L2 store (re-encoded in place), or a memory-service store directory")
    p.add_argument("--into", metavar="L2", help="the SQLite L2 store a memory-service store is migrated into")
    p.add_argument("--service", action="store_true", help="read STORE as a memory-service store (found by layout "
                                                          "without it)")
    p.add_argument("--class-fidelity", action="append", default=[], metavar="CLS=FIDELITY",
                   help="memory-service stores: fidelity of a class, over the service's policy (repeatable)")
    p.add_argument("--version", help="target encoder version (default: the registry's current; memory-service "
                                     "stores: each domain's version)")
    p.add_argument("--model-dir", help="model registry directory (default: $NBMF_MODEL_DIR or models/)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, help="codec worker threads (default: $NBMF_THREADS, else every CPU this "
                                               "process may use); the blobs are the same at any count")
    p.add_argument("--dry-run", action="store_true", help="encode and verify only; report projected savings")
    p.add_argument("--limit", type=int, help="examine at most this many rows not yet at the target")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)
