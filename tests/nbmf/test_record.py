"""nbmf.record: the one record type, the one corpus-object -> record function, Kind/Fidelity spellings."""
from __future__ import annotations

import dataclasses
import json
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbmf.blob import Fidelity, Kind
from nbmf.data.sources import SourceOptions, record_from_json
from nbmf.payload import from_raw, to_raw
from nbmf.record import FIELDS, Record, from_corpus

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(), c, max_size=4), max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), json_values))
def test_raw_bytes_are_to_raw_of_the_data(data):
    rec = from_corpus({"id": "r", "data": data})
    assert (rec.raw, rec.kind) == to_raw(data) and from_raw(rec.raw, rec.kind) == data


def test_corpus_fields_and_their_defaults():
    full = from_corpus({"id": 7, "type": "conversation", "domain": "support", "data": {"messages": []},
                        "metadata": {"source": "chat"}}, origin="f.jsonl:3", source="f", group="dlg-1")
    assert (full.id, full.type, full.domain, full.source, full.group, full.origin) == (
        "7", "conversation", "support", "chat", "dlg-1", "f.jsonl:3")
    bare = from_corpus({"data": "a note"}, origin="f.jsonl:4", source="f")
    assert (bare.id, bare.group, bare.type, bare.domain, bare.source) == ("f.jsonl:4", "f.jsonl:4", "document",
                                                                          "general", "f")
    assert from_corpus({"id": "", "data": {"messages": [1]}}, origin="o").type == "conversation"
    assert from_corpus({"id": "x", "data": [1]}).type == "structured"
    assert bare.fidelity == Fidelity.LOSSLESS and not bare.truncated


@pytest.mark.parametrize("obj", [[1], "text", None, {"id": "x"}])
def test_a_non_record_is_a_value_error(obj):
    with pytest.raises(ValueError, match="'data' field"):
        from_corpus(obj)


def test_collect_and_from_corpus_agree():
    obj = {"id": "a", "type": "structured", "data": {"k": "é"}, "metadata": {"source": "s"}}
    assert record_from_json(obj, "f:1", "f", SourceOptions()) == from_corpus(obj, origin="f:1", source="f")


@pytest.mark.parametrize("kind, fidelity", [("json", "semantic"), (1, 1), (b"JSON", b"Semantic"),
                                            (Kind.JSON, Fidelity.SEMANTIC)])
def test_kind_and_fidelity_are_the_enums_whatever_the_spelling(kind, fidelity):
    rec = Record(id="a", raw=memoryview(b"{}"), kind=kind, fidelity=fidelity)
    assert type(rec.kind) is Kind and rec.kind == Kind.JSON and type(rec.fidelity) is Fidelity
    assert rec.fidelity == Fidelity.SEMANTIC and type(rec.raw) is bytes and rec.group == "a"


def test_record_is_frozen_and_picklable():
    rec = from_corpus({"id": "a", "data": "x"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.raw = b"y"
    assert pickle.loads(pickle.dumps(rec)) == rec


def test_from_row_takes_the_columns_it_knows():
    row = {"id": "a", "raw": b"1", "kind": "json", "fidelity": "lossless", "n_bytes": 1, "sha256": "..."}
    assert Record.from_row(row) == Record(id="a", raw=b"1", kind=Kind.JSON)
    assert set(FIELDS) >= {"id", "raw", "kind", "fidelity", "type", "group", "domain", "source", "origin"}


@pytest.mark.parametrize("enum", [Kind, Fidelity])
def test_spellings_round_trip(enum):
    for m in enum:
        assert enum.of(m.label) is m and enum.of(m.label.upper()) is m and enum.of(int(m)) is m and enum.of(m) is m
        assert json.loads(json.dumps(m.label)) == m.name.lower()
    with pytest.raises(ValueError, match=f"{enum.__name__.lower()} is one of"):
        enum.of("xml")
    with pytest.raises(ValueError):
        enum.of(9)


def test_corpus_raw_is_from_corpus():
    """bench/runtime_speed.py imports this name (also against old checkouts); it has no rule of its own."""
    from nbmf.models.batching import corpus_raw

    obj = {"id": "a", "data": {"b": ["ü", 1.5]}}
    rec = from_corpus(obj)
    assert corpus_raw(obj) == (rec.raw, rec.kind)
