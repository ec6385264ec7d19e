"""`nbmf collect`: sources -> a dataset directory of Parquet shards plus manifest.json.

Layout:  OUT/manifest.json   OUT/{train,val,test}/part-00000.parquet ...
The manifest is written last (atomically): a directory without one is an unfinished run.
Memory stays bounded: records stream from the sources into per-split row buffers that are
flushed every `shard_rows` rows; dedup keeps only the 32-byte sha256 of each kept record.

A bad record never stops a run: a line, L2 row or memory-service file that cannot be read, decrypted or decoded
is counted and listed (with its error) under the manifest's `bad_lines`, and the run goes on; a legacy semantic
preview cut at 2048 characters is skipped and counted (`skipped.truncated_preview`). A source that cannot be read at all
(a missing file, an L2 store that is locked or not SQLite) stops the run with an error and no manifest.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import sys
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from nbmf.blob import Fidelity
from nbmf.data.sources import BadLine, Source, SourceOptions
from nbmf.data.split import SPLITS, Splitter
from nbmf.extras import require
from nbmf.record import Record

DATASET_FORMAT = "nbmf-dataset/1"
COLUMNS = ("id", "group", "type", "domain", "source", "kind", "fidelity", "raw", "n_bytes",
           "sha256", "origin")


def schema():
    """The shard schema; kind and fidelity are stored as their spellings ("json", "lossless")."""
    pa = require("pyarrow")
    return pa.schema([
        ("id", pa.string()), ("group", pa.string()), ("type", pa.string()), ("domain", pa.string()),
        ("source", pa.string()), ("kind", pa.string()), ("fidelity", pa.string()),
        ("raw", pa.binary()), ("n_bytes", pa.int64()), ("sha256", pa.string()), ("origin", pa.string()),
    ])


@dataclass(frozen=True)
class CollectConfig:
    sources: tuple[str, ...]
    out: Path
    group_key: str = "id"  # dotted path into JSON records (e.g. metadata.dialogue_id); corpus ids are per record
    types: tuple[str, ...] = ()  # keep only these record types; empty keeps all
    domains: tuple[str, ...] = ()  # keep only these domains; empty keeps all
    limit: int | None = None  # stop after this many records written (after filters and dedup)
    seed: int = 0  # split seed
    fractions: tuple[float, float, float] = (0.9, 0.05, 0.05)  # train, val, test by group
    shard_rows: int = 10_000  # rows per Parquet shard
    shard_bytes: int = 128 << 20  # also flush a shard at this many raw bytes (binary column < 2 GiB)
    chunk_bytes: int = 2048  # .txt/.md chunk target, UTF-8 bytes
    include_semantic: bool = False  # readers' default: semantic rows are written but not read for training
    overwrite: bool = False
    progress: bool = True  # tqdm bars on stderr
    max_bad_examples: int = 1000  # bad lines listed in the manifest (all are counted)
    # memory-service class -> "lossless" | "semantic", over the service's policy (nbmf.data.service.CLASS_FIDELITY)
    class_fidelity: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "sources", tuple(str(s) for s in self.sources))
        object.__setattr__(self, "out", Path(self.out))
        pairs = dict(self.class_fidelity).items()
        object.__setattr__(self, "class_fidelity", tuple((str(c), Fidelity.of(f).label) for c, f in pairs))
        if not self.sources:
            raise ValueError("nothing to collect: give at least one source file, directory or l2:///store.sqlite")
        if self.limit is not None and self.limit < 0:
            raise ValueError("limit must be >= 0")
        if self.shard_rows < 1 or self.chunk_bytes < 1:
            raise ValueError("shard_rows and chunk_bytes must be >= 1")
        Splitter(self.seed, self.fractions)


class _ShardWriter:
    """Buffers rows per split and writes numbered Parquet shards."""

    def __init__(self, out: Path, rows: int, max_bytes: int):
        self.out, self.rows, self.max_bytes = out, rows, max_bytes
        self.buffers: dict[str, list[tuple[Record, str]]] = defaultdict(list)
        self.buffered_bytes: Counter = Counter()
        self.shards: list[dict] = []
        self.next_index: Counter = Counter()

    def add(self, split: str, rec: Record, digest: str) -> None:
        self.buffers[split].append((rec, digest))
        self.buffered_bytes[split] += len(rec.raw)
        if len(self.buffers[split]) >= self.rows or self.buffered_bytes[split] >= self.max_bytes:
            self.flush(split)

    def flush(self, split: str) -> None:
        pa, pq = require("pyarrow"), require("pyarrow.parquet")
        rows = self.buffers.pop(split, [])
        self.buffered_bytes[split] = 0
        if not rows:
            return
        cols = {
            "id": [r.id for r, _ in rows], "group": [r.group for r, _ in rows],
            "type": [r.type for r, _ in rows], "domain": [r.domain for r, _ in rows],
            "source": [r.source for r, _ in rows], "kind": [r.kind.label for r, _ in rows],
            "fidelity": [r.fidelity.label for r, _ in rows], "raw": [r.raw for r, _ in rows],
            "n_bytes": [len(r.raw) for r, _ in rows], "sha256": [d for _, d in rows],
            "origin": [r.origin for r, _ in rows],
        }
        table = pa.table(cols, schema=schema())
        rel = f"{split}/part-{self.next_index[split]:05d}.parquet"
        self.next_index[split] += 1
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, compression="zstd")
        self.shards.append({"split": split, "path": rel, "rows": len(rows),
                            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})

    def close(self) -> None:
        for split in list(self.buffers):
            self.flush(split)


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"output directory {out} is not empty; pass --overwrite to replace a dataset there")
        if not (out / "manifest.json").exists() and not any((out / s).exists() for s in SPLITS):
            raise FileExistsError(f"{out} holds files that are not an nbmf dataset; refusing to overwrite them")
        for s in SPLITS:
            shutil.rmtree(out / s, ignore_errors=True)
        (out / "manifest.json").unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def _nested() -> defaultdict:
    return defaultdict(Counter)


def collect(cfg: CollectConfig, registry=None) -> dict:
    """Run a collection; return the manifest (also written to cfg.out/manifest.json)."""
    sources = [Source(s) for s in cfg.sources]
    for s in sources:
        s.check()
    _prepare_out(cfg.out, cfg.overwrite)
    opts = SourceOptions(group_key=cfg.group_key, chunk_bytes=cfg.chunk_bytes, class_fidelity=cfg.class_fidelity)
    splitter = Splitter(cfg.seed, cfg.fractions)
    writer = _ShardWriter(cfg.out, cfg.shard_rows, cfg.shard_bytes)
    seen: set[bytes] = set()
    counts, nbytes, by_fidelity = _nested(), _nested(), _nested()
    skipped = Counter()  # duplicate / filtered_type / filtered_domain / truncated_preview
    bad_examples: list[dict] = []
    bad_total = 0
    source_stats = []
    written = 0
    group_fallbacks = 0

    tqdm = require("tqdm").tqdm
    for src in sources:
        stats = {"source": src.spec, "records": 0, "bad": 0, "duplicates": 0, "filtered": 0, "truncated_previews": 0}
        source_stats.append(stats)
        if cfg.limit is not None and written >= cfg.limit:
            break
        try:
            total = src.total()
            bar = tqdm(total=total, desc=src.path.name, unit="row" if src.is_l2 else "B",
                       unit_scale=not src.is_l2, file=sys.stderr, disable=not cfg.progress, leave=False)
            with bar:
                for item in src.iter(opts, bar.update, registry):
                    if isinstance(item, BadLine):
                        bad_total += 1
                        stats["bad"] += 1
                        if len(bad_examples) < cfg.max_bad_examples:
                            bad_examples.append({"origin": item.origin, "reason": item.reason})
                        continue
                    if item.truncated:  # a cut preview is neither the record nor its semantic form
                        skipped["truncated_preview"] += 1
                        stats["truncated_previews"] += 1
                        continue
                    if cfg.types and item.type not in cfg.types:
                        skipped["filtered_type"] += 1
                        stats["filtered"] += 1
                        continue
                    if cfg.domains and item.domain not in cfg.domains:
                        skipped["filtered_domain"] += 1
                        stats["filtered"] += 1
                        continue
                    digest = hashlib.sha256(item.raw).digest()
                    if digest in seen:
                        skipped["duplicate"] += 1
                        stats["duplicates"] += 1
                        continue
                    seen.add(digest)
                    if cfg.group_key != "id" and item.group == item.id:
                        group_fallbacks += 1
                    split = splitter.assign(item.group)
                    writer.add(split, item, digest.hex())
                    counts[split][item.type] += 1
                    nbytes[split][item.type] += len(item.raw)
                    by_fidelity[split][item.fidelity.label] += 1
                    stats["records"] += 1
                    written += 1
                    if cfg.limit is not None and written >= cfg.limit:
                        break
        except sqlite3.DatabaseError as e:  # the store itself, not one row: nothing sensible to go on with
            raise ValueError(f"source {src.spec}: reading the L2 store failed ({type(e).__name__}: {e}); "
                             "no manifest was written: fix or unlock the store and run again") from e
    writer.close()

    content = hashlib.sha256(b"".join(sorted(seen))).hexdigest()
    manifest = {
        "format": DATASET_FORMAT,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()
                    if k not in ("overwrite", "progress")},
        "records": written,
        "counts": {s: dict(counts[s]) for s in SPLITS},
        "bytes": {s: dict(nbytes[s]) for s in SPLITS},
        "fidelity": {s: dict(by_fidelity[s]) for s in SPLITS},
        "group_key_fallbacks": group_fallbacks,
        "skipped": dict(skipped),
        "sources": source_stats,
        "bad_lines": {"count": bad_total, "examples": bad_examples},
        "shards": writer.shards,
        "content_hash": f"sha256:{content}",
        "content_hash_definition": "sha256 over the sorted 32-byte sha256 digests of every record's raw bytes",
    }
    tmp = cfg.out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(cfg.out / "manifest.json")
    return manifest
