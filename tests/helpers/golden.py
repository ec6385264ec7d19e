"""Golden-blob sets (tests/golden/*): each a directory of blob files and an index.json describing them."""
from __future__ import annotations

import json
from pathlib import Path


def as_json(value) -> dict:
    """A payload as an index entry holds it: bytes in hex, everything else as itself (lone surrogates survive as \\u
    escapes)."""
    return {"bytes_hex": value.hex()} if isinstance(value, bytes) else {"value": value}


def from_json(entry: dict):
    return bytes.fromhex(entry["bytes_hex"]) if "bytes_hex" in entry else entry["value"]


def write_index(directory: Path, entries: list) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "index.json").write_text(json.dumps(entries, indent=1, ensure_ascii=True) + "\n")


def read_index(directory: Path) -> list:
    return json.loads((directory / "index.json").read_text())


def golden_case(directory: Path, index: list, name: str, cases: dict | None = None, suffix: str = ".nbmf"):
    """(index entry, file bytes) of the set's case ``name``; with ``cases``, the entry's recorded input and fidelity
    must be the case's (payload, fidelity)."""
    entry = next(e for e in index if e["file"] == f"{name}{suffix}")
    if cases is not None:
        payload, fidelity = cases[name]
        assert from_json(entry["input"]) == payload and entry["fidelity"] == fidelity
    return entry, (directory / entry["file"]).read_bytes()
