"""JSON Lines corpus files (``data/sample/*.jsonl``, ``../shared/corpus/*.jsonl``): one record object a line.

A record is ``{"id", "data", ...}``: ``data`` is a string (text) or any JSON value; the other fields
(``type``, ``domain``, ...) describe it. ``nbmf collect`` turns such files into Parquet datasets with
validation and splits; these readers are for the small, trusted files the pipeline, the trainers and
the bench scripts read directly: ``iter_records`` as ``nbmf.record.Record`` (raw bytes), ``read_corpus``
as the objects themselves (payloads, e.g. to send over HTTP).

>>> import io, tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "c.jsonl"
>>> _ = p.write_text('{"id": "a", "data": "hi"}\\n\\n{"id": "b", "data": {"k": 1}}\\n')
>>> [r["id"] for r in read_corpus(p)], read_corpus(p, limit=1)[0]["data"]
(['a', 'b'], 'hi')
>>> [(r.id, r.raw, r.kind.label) for r in iter_records(p)]
[('a', b'hi', 'text'), ('b', b'{"k": 1}', 'json')]
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

from nbmf.errors import FormatError
from nbmf.record import Record, from_corpus


def _objects(path: str | Path) -> Iterator[tuple[str, dict]]:
    """(origin "path:line", object) per non-blank line; a line that is not a JSON object raises FormatError."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise FormatError(f"{path}:{n}: not a JSON record ({e})") from None
            if not isinstance(record, dict):
                raise FormatError(f"{path}:{n}: a corpus record is a JSON object, not {type(record).__name__}")
            yield f"{path}:{n}", record


def read_corpus(path: str | Path, limit: int | None = None) -> list[dict]:
    """The first ``limit`` records (all when None) of a JSONL corpus file; blank lines are skipped.

    A line that is not a JSON object raises FormatError naming the file and line.
    """
    if limit is not None and limit <= 0:
        return []
    return [obj for _, obj in islice(_objects(path), limit)]


def iter_records(path: str | Path, limit: int | None = None) -> Iterator[Record]:
    """The first ``limit`` records (all when None) as Records (``nbmf.record.from_corpus``), streamed.

    A line that is not a corpus record raises FormatError naming the file and line.
    """
    if limit is not None and limit <= 0:
        return
    for origin, obj in islice(_objects(path), limit):
        try:
            yield from_corpus(obj, origin=origin)
        except ValueError as e:
            raise FormatError(f"{origin}: {e}") from None
