"""JSON Lines corpus files (``data/sample/*.jsonl``, ``../shared/corpus/*.jsonl``): one record object a line.

A record is ``{"id", "data", ...}``: ``data`` is a string (text) or any JSON value; the other fields
(``type``, ``domain``, ...) describe it. ``nbmf collect`` turns such files into Parquet datasets with
validation and splits; this reader is for the small, trusted files the pipeline and the standalone
trainer read directly.

>>> import io, tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "c.jsonl"
>>> _ = p.write_text('{"id": "a", "data": "hi"}\\n\\n{"id": "b", "data": {"k": 1}}\\n')
>>> [r["id"] for r in read_corpus(p)], read_corpus(p, limit=1)[0]["data"]
(['a', 'b'], 'hi')
"""
from __future__ import annotations

import json
from pathlib import Path

from nbmf.errors import FormatError


def read_corpus(path: str | Path, limit: int | None = None) -> list[dict]:
    """The first ``limit`` records (all when None) of a JSONL corpus file; blank lines are skipped.

    A line that is not a JSON object raises FormatError naming the file and line.
    """
    out: list[dict] = []
    if limit is not None and limit <= 0:
        return out
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
            out.append(record)
            if limit is not None and len(out) >= limit:
                break
    return out
