"""Readers for a collected dataset (see nbmf.data.collect): records, plain pyarrow rows, and Ray Data.

Semantic rows (lossy originals) are left out unless asked for: by default the readers follow the
dataset's own `include_semantic` option, which `nbmf collect --include-semantic` sets.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from nbmf.data.split import SPLITS
from nbmf.extras import require
from nbmf.record import FIELDS, Record


class DatasetError(ValueError):
    """The directory is not a complete nbmf dataset, or the request does not fit it."""


def load_manifest(path: str | Path) -> dict:
    path = Path(path)
    mf = path / "manifest.json"
    if not mf.is_file():
        raise DatasetError(f"{path} is not an nbmf dataset (no manifest.json); create one with `nbmf collect`")
    try:
        return json.loads(mf.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{mf} is not valid JSON ({e.msg}); re-run `nbmf collect`") from None


def shard_paths(path: str | Path, split: str | None = None) -> list[Path]:
    """Absolute shard paths of one split (None: every split), in manifest order."""
    if split is not None and split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    path = Path(path)
    shards = load_manifest(path)["shards"]
    return [(path / s["path"]).resolve() for s in shards if split is None or s["split"] == split]


def _keep_semantic(path: Path, include_semantic: bool | None) -> bool:
    if include_semantic is not None:
        return include_semantic
    return bool(load_manifest(path)["options"].get("include_semantic", False))


def read_records(path: str | Path, split: str | None = None, columns: Sequence[str] | None = None,
                 *, include_semantic: bool | None = None, batch_rows: int = 1024) -> Iterator[dict]:
    """Yield rows as dicts ({"id", "type", "raw", ...}), one shard batch in memory at a time."""
    from nbmf.data.collect import COLUMNS

    pq = require("pyarrow.parquet")

    path = Path(path)
    keep_sem = _keep_semantic(path, include_semantic)
    wanted = list(columns) if columns is not None else list(COLUMNS)
    unknown = [c for c in wanted if c not in COLUMNS]
    if unknown:
        raise DatasetError(f"unknown column(s) {unknown}; a dataset has {', '.join(COLUMNS)}")
    read_cols = wanted if keep_sem or "fidelity" in wanted else wanted + ["fidelity"]
    for shard in shard_paths(path, split):
        pf = pq.ParquetFile(shard)
        for batch in pf.iter_batches(batch_size=batch_rows, columns=read_cols):
            for row in batch.to_pylist():
                if not keep_sem and row["fidelity"] != "lossless":
                    continue
                if read_cols is not wanted:
                    row.pop("fidelity")
                yield row


def iter_records(path: str | Path, split: str | None = None, *, include_semantic: bool | None = None,
                 batch_rows: int = 1024) -> Iterator[Record]:
    """The split's rows as ``nbmf.record.Record`` (kind and fidelity parsed from their column spellings)."""
    from nbmf.data.collect import COLUMNS

    columns = [c for c in FIELDS if c in COLUMNS]
    for row in read_records(path, split, columns, include_semantic=include_semantic, batch_rows=batch_rows):
        yield Record.from_row(row)


def ray_dataset(path: str | Path, split: str | None = "train", *, columns: Sequence[str] | None = None,
                include_semantic: bool | None = None):
    """A `ray.data.Dataset` over one split's shards (ray is imported here, never by nbmf at import)."""
    import ray.data
    from ray.data.expressions import col

    path = Path(path)
    paths = [str(p) for p in shard_paths(path, split)]
    if not paths:
        raise DatasetError(f"split {split!r} of {path} has no shards (no records were assigned to it)")
    keep_sem = _keep_semantic(path, include_semantic)
    ds = ray.data.read_parquet(paths)
    if not keep_sem:
        ds = ds.filter(expr=col("fidelity") == "lossless")
    if columns is not None:
        ds = ds.select_columns(list(columns))  # Ray Data pushes the projection into the Parquet read
    return ds
