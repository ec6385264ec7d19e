"""The JSON payload rules: what round-trips is stored, what would not is refused (PayloadError, naming where),
stored JSON past the limits is a CorruptBlobError, and none of it depends on the caller's stack depth."""
from __future__ import annotations

import json
import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.stack import deep_call
from nbmf.blob import Kind
from nbmf.errors import CorruptBlobError, NBMFError, PayloadError
from nbmf.payload import MAX_DEPTH, MAX_INT_DIGITS, canonical, check_json, from_raw, nesting, to_raw


def nest(depth: int, leaf=0, kind: str = "list"):
    """``leaf`` inside ``depth`` lists (or single-key dicts), built without recursion."""
    value = leaf
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


def same(a, b) -> bool:
    """Equal and of the same types all the way down (1 == 1.0 == True and (1,) != [1] are what we must catch)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return len(a) == len(b) and all(same(ka, kb) and same(a[ka], b[kb]) for ka, kb in zip(a, b))
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)  # -0.0 must stay -0.0
    return a == b


def round_trips_by_json(value) -> bool:
    """The oracle: json itself gives the value back exactly, as a finite-float JSON document within the limits."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):  # sets, bytes, NaN/Infinity, ints past Python's digit limit
        return False
    return same(json.loads(text), value) and nesting(text) <= MAX_DEPTH and all(
        len(str(abs(v))) <= MAX_INT_DIGITS for v in _ints(value))


def _ints(value):
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
        elif isinstance(v, int) and not isinstance(v, bool):
            yield v


texts = st.text(max_size=8) | st.integers(0xD800, 0xDFFF).map(chr)
huge_ints = st.tuples(st.sampled_from([-1, 1]), st.integers(MAX_INT_DIGITS - 1, MAX_INT_DIGITS + 1)).map(
    lambda t: t[0] * (10 ** t[1] - 1))  # as many digits as t[1]: at, under and over the limit
scalars = (st.none() | st.booleans() | st.integers() | st.floats() | texts | huge_ints
           | st.sampled_from([-0.0, b"x", {1, 2}]))
keys = texts | st.integers(-20, 20) | st.floats(allow_nan=False, width=16) | st.booleans() | st.none()
anything = st.recursive(scalars, lambda c: (st.lists(c, max_size=4) | st.lists(c, max_size=3).map(tuple)
                                             | st.dictionaries(keys, c, max_size=4)), max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(anything)
def test_every_value_round_trips_exactly_or_is_refused(value):
    try:
        raw, kind = to_raw(value, Kind.JSON)
    except PayloadError:
        assert not round_trips_by_json(value)
        return
    assert round_trips_by_json(value) and same(from_raw(raw, kind), value)
    assert raw == json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")  # the raw form is unchanged


@pytest.mark.parametrize("value, path", [
    ({1: "a", "1": "b"}, "$"), ({"a": {1.5: 0}}, '$["a"]'), ({"x": [{True: 0}]}, '$["x"][0]'), ({None: 1}, "$"),
    ({"a": [0, (1, 2)]}, '$["a"][1]'), ({"s": {1, 2}}, '$["s"]'), ([b"raw"], "$[0]"), ([float("nan")], "$[0]"),
    ({"t": float("inf")}, '$["t"]'), (-math.inf, "$"), ([10**MAX_INT_DIGITS], "$[0]"), (object(), "$"),
    ({"a\"b": {("t",): 1}}, '$["a\\"b"]'),
])
def test_refused_values_name_their_path(value, path):
    with pytest.raises(PayloadError, match=re.escape(f"at {path} ")):
        to_raw(value)


def test_payload_error_is_a_value_error_and_an_nbmf_error():
    with pytest.raises(ValueError):
        to_raw({1: 2})
    with pytest.raises(NBMFError):
        to_raw((1,))


@pytest.mark.parametrize("value", [[True, 1, 0, False, 1.0, -0.0], {"n": 10**MAX_INT_DIGITS - 1, "m": -(10**40)},
                                   {"": {"true": None}}, [1e308, 5e-324]])
def test_json_that_round_trips_is_kept_exactly(value):
    assert same(from_raw(*to_raw(value)), value)


@pytest.mark.parametrize("kind", ["list", "dict"])
def test_nesting_limit(kind):
    ok, over = nest(MAX_DEPTH, kind=kind), nest(MAX_DEPTH + 1, kind=kind)
    assert check_json(ok) == MAX_DEPTH and from_raw(*to_raw(ok)) == ok
    with pytest.raises(PayloadError, match=f"deeper than {MAX_DEPTH}"):
        to_raw(over)
    with pytest.raises(CorruptBlobError, match=f"nests {MAX_DEPTH + 1} levels"):
        from_raw(json.dumps(over).encode(), Kind.JSON)  # json.dumps can: the depth is under Python's limit


def test_hostile_depth_is_refused_without_recursion():
    with pytest.raises(PayloadError, match="deeper than"):
        to_raw(nest(100_000))
    cyclic: list = []
    cyclic.append(cyclic)
    with pytest.raises(PayloadError, match="deeper than"):
        to_raw({"c": cyclic})
    for text in ["[" * 100_000 + "]" * 100_000, '{"a":' * 50_000 + "0" + "}" * 50_000, "[" * 100_000]:
        with pytest.raises(CorruptBlobError):
            from_raw(text.encode(), Kind.JSON)
        with pytest.raises(CorruptBlobError):
            canonical(text.encode(), Kind.JSON)


def test_brackets_inside_strings_do_not_count_as_nesting():
    value = ["[" * 2000, {"{": '\\"[[[' * 300, "k\"[": "]" * 5}, "ends in a backslash \\", "[" * 600]
    raw, kind = to_raw(value)
    assert nesting(raw.decode()) == 2 and from_raw(raw, kind) == value


@pytest.mark.parametrize("digits", [MAX_INT_DIGITS + 1, 5000, 100_000])
def test_stored_integer_past_the_digit_limit_is_corrupt(digits):
    for text in ["7" * digits, f'{{"n": [-{"9" * digits}]}}']:
        with pytest.raises(CorruptBlobError, match="integer"):
            from_raw(text.encode(), Kind.JSON)
    assert from_raw(b"7" * MAX_INT_DIGITS, Kind.JSON) == int("7" * MAX_INT_DIGITS)


# -- any caller stack depth ---------------------------------------------------------------------------
def test_deep_records_decode_at_a_deep_caller_stack():
    value = {"turns": [nest(MAX_DEPTH - 2, "é"), {"k": nest(300, kind="dict")}]}
    raw, kind = to_raw(value)
    with pytest.raises(RecursionError):  # what from_raw did before: json.loads inline, 900 frames deep
        deep_call(lambda: json.loads(raw))
    assert deep_call(lambda: from_raw(raw, kind)) == value
    assert deep_call(lambda: to_raw(value)) == (raw, kind)
    assert deep_call(lambda: canonical(raw, kind)) == canonical(raw, kind)


# -- hostile stored JSON ------------------------------------------------------------------------------
hostile_pieces = st.sampled_from(["[", "]", "{", "}", '"a":', ",", "1", "-0", "1e400", "NaN", "Infinity", "-Infinity",
                                  '"\\ud800"', '"\\udfff\\ud800"', "true", "null", '"', "\\", "9" * 5000, " "])
hostile_texts = st.one_of(
    st.lists(hostile_pieces, max_size=60).map("".join),
    st.integers(0, 3000).map(lambda n: "[" * n + "]" * n),
    st.integers(0, 3000).map(lambda n: '{"a":' * n + "0" + "}" * n),
    st.builds(lambda n, body: "[" * n + body + "]" * n, st.integers(0, 1200), hostile_pieces),
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(hostile_texts.map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary(max_size=64)))
def test_hostile_stored_json_only_raises_nbmf_errors(raw):
    for fn in (lambda: from_raw(raw, Kind.JSON), lambda: canonical(raw, Kind.JSON),
               lambda: deep_call(lambda: from_raw(raw, Kind.JSON))):
        try:
            fn()
        except NBMFError:
            pass
