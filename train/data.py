"""Training data: a collected Parquet dataset (or corpus JSONL) -> Ray Datasets -> per-worker token windows.

The driver reads records as ``nbmf.record.Record`` (``iter_rows``): raw bytes as the codec codes
them, ``kind`` and ``fidelity`` the ``nbmf.blob`` enums. Ray Data carries plain columns instead:
``ray_dataset`` is the one place records become ``{"raw": binary, "kind": int8, "fidelity": int8}``
(the enums' integer ids). Ray Train streams each worker its shard (``ray.train.get_dataset_shard``),
and the worker tokenizes it with the driver's tokenizer and cuts it into windows
(``nbmf.models.batching``).
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nbmf.blob import Fidelity, Kind
from nbmf.record import Record

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Source:
    """Where the records come from: ``parquet`` (a collected dataset dir) or ``jsonl`` (corpus files)."""

    kind: str
    path: Path  # local: the source itself, or this node's cached copy of a remote one (train.storage)
    test_share: float = 0.5  # jsonl without test.jsonl: share of val.jsonl (by id hash) held out as test
    remote: str = ""  # the URI when the source is remote (s3://, gs://, ...)

    def jsonl_file(self, split: str) -> Path:
        if split == "test" and (self.path / "test.jsonl").exists():
            return self.path / "test.jsonl"
        return self.path / ("train.jsonl" if split == "train" else "val.jsonl")


def resolve_source(source: str | Path, test_share: float = 0.5) -> Source:
    """A local path, or a URI copied once to this node's cache (train.storage.local_dir)."""
    from train import storage

    remote = storage.resolve(source) if storage.is_uri(source) else ""
    path = storage.local_dir(remote) if remote else Path(storage.resolve(source))
    if (path / "manifest.json").is_file() and any(path.rglob("*.parquet")):
        return Source("parquet", path, test_share, remote)
    if (path / "train.jsonl").is_file() and (path / "val.jsonl").is_file():
        return Source("jsonl", path, test_share, remote)
    raise FileNotFoundError(
        f"data source {remote or path} is neither a collected dataset (manifest.json + Parquet shards: run "
        "`nbmf collect`) nor a directory with train.jsonl and val.jsonl (like data/sample)")


def _held_out(record_id: str, share: float) -> bool:
    h = hashlib.sha256(b"test\x00" + record_id.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64 < share


def _jsonl_rows(src: Source, split: str) -> Iterator[Record]:
    from nbmf.data.corpus import iter_records

    carve = split in ("val", "test") and not (src.path / "test.jsonl").exists()
    for rec in iter_records(src.jsonl_file(split)):
        if carve and _held_out(rec.id, src.test_share) != (split == "test"):
            continue
        yield rec


def iter_rows(src: Source, split: str, limit: int = 0, include_semantic: bool = False) -> Iterator[Record]:
    """The split's records in a fixed order (the first ``limit`` if > 0)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if src.kind == "jsonl":
        rows = _jsonl_rows(src, split)
    else:
        from nbmf.data.dataset import iter_records

        rows = iter_records(src.path, split, include_semantic=include_semantic)
    for i, row in enumerate(rows):
        if limit and i >= limit:
            return
        yield row


def ray_dataset(src: Source, split: str, limit: int = 0, include_semantic: bool = False):
    """A Ray Dataset of the split's rows: columns raw (binary), kind and fidelity (int8 enum ids)."""
    import ray.data

    # Ray Data reads a local dataset where its read tasks run; a remote source's copy exists on this node
    # only, so its rows travel from here through the object store.
    if src.kind == "parquet" and not limit and not src.remote:
        from nbmf.data.dataset import ray_dataset as collected

        ds = collected(src.path, split, columns=("kind", "fidelity", "raw"), include_semantic=include_semantic)
        # Read now, while the cluster's CPUs are free: once the training workers hold every CPU (2 workers on
        # 2 cores), a lazy Parquet read waits for a CPU that never comes and the run hangs.
        return ds.map_batches(_normalize_batch, batch_format="numpy").materialize()
    import pyarrow as pa

    rows = list(iter_rows(src, split, limit, include_semantic))
    table = pa.table({
        "raw": pa.array([r.raw for r in rows], pa.binary()),
        "kind": pa.array([int(r.kind) for r in rows], pa.int8()),
        "fidelity": pa.array([int(r.fidelity) for r in rows], pa.int8()),
    })
    return ray.data.from_arrow(table)


def _normalize_batch(batch: dict) -> dict:
    """Collected rows spell kind and fidelity ("json", "lossless"); training uses their integer ids."""
    kind = np.array([Kind.of(k) for k in batch["kind"]], dtype=np.int8)
    fid = np.array([Fidelity.of(f) for f in batch["fidelity"]], dtype=np.int8)
    return {"raw": batch["raw"], "kind": kind, "fidelity": fid}


def data_hash(src: Source) -> str:
    """Content identity of the training data (recorded in checkpoints and artifact manifests)."""
    if src.kind == "parquet":
        from nbmf.data.dataset import load_manifest

        return str(load_manifest(src.path)["content_hash"])
    h = hashlib.sha256()
    for name in ("train.jsonl", "val.jsonl", "test.jsonl"):
        f = src.path / name
        if f.exists():
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return "sha256:" + h.hexdigest()


def semantic_form(raw: bytes, kind: int) -> bytes | None:
    """The canonical (semantic-fidelity) bytes of a record, or None for bytes payloads."""
    from nbmf.payload import canonical

    return None if kind == Kind.BYTES else canonical(raw, Kind(kind))


def _picked(raw: bytes, seed: int, share: float) -> bool:
    h = hashlib.sha256(f"{seed}\x00semantic\x00".encode() + raw).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64 < share


def shard_windows(batches, tokenizer, model_cfg, semantic_share: float = 0.0, seed: int = 0):
    """Token windows of one worker's shard: ``(windows, raw_bytes, records)``.

    ``batches`` yields numpy dicts (``raw``, ``kind``, ``fidelity``), e.g. a DataIterator's
    ``iter_batches(batch_format="numpy")``. A share of lossless records, picked by a hash of their
    bytes (the same on every restart), is also added in its semantic form.
    """
    from nbmf.models.batching import record_windows

    samples: list[tuple[bytes, int, int]] = []
    raw_bytes = records = 0
    for batch in batches:
        for raw, kind, fid in zip(batch["raw"], batch["kind"], batch["fidelity"]):
            raw, kind, fid = bytes(raw), int(kind), int(fid)
            samples.append((raw, kind, fid))
            raw_bytes += len(raw)
            records += 1
            if semantic_share and fid == 0 and _picked(raw, seed, semantic_share):
                canon = semantic_form(raw, kind)
                if canon is not None:
                    samples.append((canon, kind, 1))
    ids = tokenizer.encode_batch([s[0] for s in samples]) if samples else []
    windows = [w for (_, kind, fid), x in zip(samples, ids) for w in record_windows(x, kind, fid, model_cfg)]
    return windows, raw_bytes, records
