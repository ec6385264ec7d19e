"""nbmf.data.corpus.read_corpus: the JSONL corpus reader the pipeline and the training driver use."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from nbmf.data.corpus import read_corpus
from nbmf.errors import FormatError

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"


def test_reads_every_record_of_the_bundled_sample_in_order():
    lines = [json.loads(x) for x in (SAMPLE / "val.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    assert read_corpus(SAMPLE / "val.jsonl") == lines and len(lines) > 10
    assert read_corpus(str(SAMPLE / "val.jsonl"), limit=3) == lines[:3]
    assert read_corpus(SAMPLE / "val.jsonl", limit=0) == []


def test_blank_lines_and_unicode(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"id": "a", "data": "h\\u00e9"}\n\n  \n{"id": "b", "data": [1, {"k": null}]}', encoding="utf-8")
    assert read_corpus(p) == [{"id": "a", "data": "hé"}, {"id": "b", "data": [1, {"k": None}]}]


@pytest.mark.parametrize("text, match", [('{"id": "a"}\n{"id": \n', r"c\.jsonl:2: not a JSON record"),
                                         ('{"id": "a"}\n\n[1, 2]\n', r"c\.jsonl:3: .*JSON object, not list")])
def test_a_bad_line_names_file_and_line(tmp_path, text, match):
    p = tmp_path / "c.jsonl"
    p.write_text(text)
    with pytest.raises(FormatError, match=match):
        read_corpus(p)
    assert read_corpus(p, limit=1) == [{"id": "a"}]  # lines past the limit are not read
