"""Payload kinds, raw bytes (the bench's size definition) and the canonical semantic form."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbmf.blob import Kind
from nbmf.errors import CorruptBlobError
from nbmf.payload import canonical, from_raw, infer_kind, to_raw

lone_surrogates = st.integers(0xD800, 0xDFFF).map(chr)
pieces = st.one_of(st.characters(), lone_surrogates, st.sampled_from(["😀", "👩‍👩‍👧", "é", "e\u0301", "\u00a0", "\n", "  "]))
texts = st.lists(pieces, max_size=40).map("".join)  # unicode incl. emoji, ZWJ sequences, lone surrogates
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | texts,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(texts, c, max_size=4), max_leaves=25)


@pytest.mark.parametrize("payload, kind", [
    ("", Kind.TEXT), ("x", Kind.TEXT), (b"", Kind.BYTES), (bytearray(b"a"), Kind.BYTES), (memoryview(b"a"), Kind.BYTES),
    ({}, Kind.JSON), ([], Kind.JSON), (None, Kind.JSON), (0, Kind.JSON), (1.5, Kind.JSON), (True, Kind.JSON),
])
def test_kind_follows_the_python_type(payload, kind):
    assert infer_kind(payload) == kind and to_raw(payload)[1] == kind


@settings(max_examples=200, deadline=None)
@given(texts)
def test_text_raw_is_utf8_with_surrogatepass(text):
    raw, kind = to_raw(text)
    assert raw == text.encode("utf-8", "surrogatepass") and from_raw(raw, kind) == text


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_json_raw_is_json_dumps_and_inverts(value):
    raw, kind = to_raw(value, Kind.JSON)  # a bare str is JSON only when asked: inferred, it is text
    assert kind == Kind.JSON and to_raw(value)[1] == (Kind.TEXT if isinstance(value, str) else Kind.JSON)
    assert raw == json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    assert from_raw(raw, kind) == value


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_bytes_raw_is_the_bytes(data):
    assert to_raw(data) == (data, Kind.BYTES) and from_raw(data, Kind.BYTES) == data


def test_lone_surrogates_from_json_escapes_survive():
    """JSON in the wild carries escaped lone surrogates ("\\ud83d" of a cut emoji); they must round-trip."""
    value = json.loads('{"cut": "\\ud83d", "low": ["\\udc00x"], "pair": "\\ud83d\\ude00"}')
    raw, kind = to_raw(value)
    assert b"\xed\xa0\xbd" in raw  # the surrogate's own 3 bytes, not an error, not a replacement character
    assert from_raw(raw, kind) == value and value["pair"] == "😀"


@pytest.mark.parametrize("kind", ["json", "JSON", Kind.JSON, 1])
def test_explicit_kind_forms(kind):
    assert to_raw("abc", kind) == (b'"abc"', Kind.JSON)


@pytest.mark.parametrize("payload, kind", [(b"x", Kind.TEXT), (1, Kind.TEXT), ("x", Kind.BYTES)])
def test_wrong_payload_for_kind_is_type_error(payload, kind):
    with pytest.raises(TypeError):
        to_raw(payload, kind)


@pytest.mark.parametrize("raw, kind", [(b"\xff", Kind.TEXT), (b"\xc3", Kind.TEXT), (b"{", Kind.JSON),
                                       (b'{"a": 1} x', Kind.JSON), (b"\xff", Kind.JSON)])
def test_undecodable_raw_is_corrupt(raw, kind):
    with pytest.raises(CorruptBlobError):
        from_raw(raw, kind)


# -- canonical (semantic) form -------------------------------------------------------------------
@pytest.mark.parametrize("text, want", [
    ("", ""), ("   ", ""), ("  Hello \n\t world  ", "Hello world"), ("a\u00a0\u2003b", "a b"),
    ("e\u0301", "\u00e9"), ("Å", "Å"), ("x\r\n\r\ny", "x y"),
])
def test_canonical_text(text, want):
    assert canonical(text.encode(), Kind.TEXT) == want.encode()


def test_canonical_json_is_compact_and_sorted():
    raw, _ = to_raw({"b": [1, {"d": 0, "c": "é"}], "a": None})
    assert canonical(raw, Kind.JSON) == '{"a":null,"b":[1,{"c":"é","d":0}]}'.encode()


def test_canonical_bytes_are_unchanged():
    assert canonical(b"  \x00 x ", Kind.BYTES) == b"  \x00 x "


@settings(max_examples=150, deadline=None)
@given(st.one_of(texts.map(lambda t: (t, Kind.TEXT)), json_values.map(lambda v: (v, Kind.JSON))))
def test_canonical_is_idempotent_and_decodable(case):
    payload, kind = case
    once = canonical(to_raw(payload, kind)[0], kind)
    assert canonical(once, kind) == once
    value = from_raw(once, kind)
    if kind == Kind.JSON:
        assert value == payload
    else:
        assert value.split() == value.split(" ") or value == ""  # single spaces, no edges
