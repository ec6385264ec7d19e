"""What nbmf.compat and nbmf.client must give back, spelled out (not computed with the code under test), and how
the memory service stores a blob."""
from __future__ import annotations

import json
from pathlib import Path

LOSSLESS = ["Book a table for two at 7pm.", "", "  spaced \t out \n", "héllo 😀 漢字 e\u0301",
            {"role": "user", "content": "hi", "n": [1, 2.5, None, True, -0.0]}, ["a", 1, {"b": []}], {}, [],
            {"ünï": "cödé 😀"}, 0, None, True, "x" * 5000]
# (payload, the canonical text semantic fidelity gives back), spelled out rather than computed
SEMANTIC = [
    ("  Book  a\ttable \n for two ", "Book a table for two"),
    ("", ""),
    ("   \n\t ", ""),
    ("cafe\u0301  😀  漢字", "café 😀 漢字"),  # NFC, whitespace runs collapsed
    ({"b": 1, "a": "é", "c": [None, True]}, '{"a":"é","b":1,"c":[null,true]}'),
    (["x", {"z": None, "y": 2}], '["x",{"y":2,"z":null}]'),
    ({}, "{}"),
    ([], "[]"),
    (7, "7"),
    ("word " * 1000, ("word " * 1000).strip()),  # 4999 characters: the old stub kept only 2048
]


def through_a_file(blob: dict, tmp_path: Path):
    """What the service does with a blob: strict JSON into a file, and back."""
    f = tmp_path / "record.json"
    f.write_text(json.dumps({"id": "m1", "blob": blob}, allow_nan=False), encoding="utf-8")
    return json.loads(f.read_text(encoding="utf-8"))["blob"]
