"""Legacy lossless blobs of dicts with non-string keys, built exactly as the old stub built them (conftest:
build_legacy_blob signs json.dumps(original, sort_keys=True)), and hostile legacy blobs."""
from __future__ import annotations

import json
import math
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.stack import deep_call
from nbmf.codecs import legacy
from nbmf.errors import LegacySignatureError, NBMFError, OutputTooLargeError

NAN = float("nan")


def as_stored(obj):
    """What the lossless code holds: json.dumps(obj), keys spelled as strings, read back."""
    return json.loads(json.dumps(obj, ensure_ascii=False))


def edited(blob: dict, old: str, new: str) -> dict:
    """``blob`` with one edit of its payload text, re-compressed (so only the signature can catch it)."""
    text = zlib.decompress(bytes.fromhex(blob["code"])).decode()
    assert text.count(old) == 1, text
    return {**blob, "code": zlib.compress(text.replace(old, new).encode(), 9).hex()}


ORIGINALS = {
    "float keys": {2.5: "a", 10.0: "b", 1e16: "c", -0.0: "d", 0.1: "e", 1e-05: "f"},
    "mixed int/float keys": {1.5: "a", 2: "b", 10: "c", -3: "d"},
    "bool and int keys": {True: "t", False: "f", 2: "two", -1: "minus"},
    "infinities": {math.inf: 1, -math.inf: 2, 0: 3, 1e300: 4},
    "NaN key among numbers": {NAN: 1, 20: 2, 3: 3},
    "None key alone": {"a": {None: 1}, "b": [{None: {10: 0, 9: 1}}]},
    "int keys here, digit strings there": [{9: "int", 10: "int"}, {"10": "str", "9": "str"}],
    "negative ints": {-1: "a", -2: "b", -10: "c"},
    "big int keys": {10**20: "a", 9: "b", -(10**30): "c"},
    "nested": {"z": {10: {"b": 1, "a": [{100: 1, 20: 2}]}, 9: None}, "a": {"11": 0, "9": 1}},
    "many dicts of one kind": [{9: i, 10: -i} for i in range(40)],  # 2**40 mixes: the all-numeric try finds it
    "strings that look like numbers": {"10": 1, "9": 2, "1.5": 3, "true": 4},
}


@pytest.mark.parametrize("name", sorted(ORIGINALS))
def test_honest_blobs_with_non_string_keys_verify(stub_registry, make_legacy_blob, name):
    original = ORIGINALS[name]
    blob = make_legacy_blob(original)
    got = stub_registry.decode(blob)
    assert json.dumps(got) == json.dumps(as_stored(original))  # same text: NaN never equals itself


@pytest.mark.parametrize("name, old, new", [
    ("mixed int/float keys", '"b"', '"B"'), ("mixed int/float keys", '"10"', '"11"'), ("float keys", "1e+16", "1e+17"),
    ("int keys here, digit strings there", '"str"}', '"stR"}'), ("nested", '"a": [', '"A": ['),
    ("bool and int keys", '"true"', '"True"'), ("many dicts of one kind", '"10": -39', '"10": -38'),
])
def test_a_one_character_edit_fails_the_signature(stub_registry, make_legacy_blob, name, old, new):
    blob = make_legacy_blob(ORIGINALS[name])
    stub_registry.decode(blob)
    with pytest.raises(LegacySignatureError):
        stub_registry.decode(edited(blob, old, new))


def test_key_order_choices_are_per_dict_up_to_the_cap(stub_registry, make_legacy_blob):
    """k dicts each of int keys or of digit-string keys, mixed: 2**k orders. Within the cap all are tried."""
    fits = (legacy.MAX_SIGNED_ORDERS).bit_length() - 1  # 2**fits orders fit the cap
    pattern = [i % 3 == 0 for i in range(fits)]
    mixed = [{9: i, 10: i} if as_int else {"9": i, "10": i} for i, as_int in enumerate(pattern)]
    assert stub_registry.decode(make_legacy_blob(mixed)) == as_stored(mixed)
    over = mixed + [{9: 99, 10: 99}]
    with pytest.raises(LegacySignatureError, match=f"cap of {legacy.MAX_SIGNED_ORDERS} signings"):
        stub_registry.decode(make_legacy_blob(over))


def test_the_cap_shrinks_for_large_payloads(stub_registry, make_legacy_blob, monkeypatch):
    mixed = [{9: 0, 10: 0}, {"9": 0, "10": 0}, {"pad": "x" * 2000}]
    blob = make_legacy_blob(mixed)
    assert stub_registry.decode(blob) == as_stored(mixed)
    monkeypatch.setattr(legacy, "SIG_BUDGET_BYTES", 4000)  # two signings of ~2 KB: the mix is past the budget
    with pytest.raises(LegacySignatureError, match="cap of 2 signings"):
        stub_registry.decode(blob)


key_sets = st.one_of(  # one key type per dict, as the old stub's sort required
    st.dictionaries(st.integers(-200, 200), st.none(), min_size=2, max_size=5),
    st.dictionaries(st.floats(allow_nan=False), st.none(), min_size=2, max_size=5),
    st.dictionaries(st.integers(-5, 5) | st.booleans() | st.floats(-9, 9), st.none(), min_size=2, max_size=5),
    st.dictionaries(st.from_regex(r"-?[0-9]{1,3}", fullmatch=True), st.none(), min_size=2, max_size=5),
    st.dictionaries(st.text(max_size=3), st.none(), max_size=4),
)


def _fill(leaves):
    return st.recursive(leaves, lambda c: st.lists(c, max_size=3) | st.tuples(key_sets, st.lists(c, max_size=5)).map(
        lambda t: dict(zip(t[0], t[1] + [None] * len(t[0])))), max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(_fill(st.integers() | st.text(max_size=4) | key_sets).filter(lambda v: _count_dicts(v) <= 7))
def test_any_honest_blob_verifies(stub_registry, make_legacy_blob, original):
    assert json.dumps(stub_registry.decode(make_legacy_blob(original))) == json.dumps(as_stored(original))


def _count_dicts(v) -> int:
    if isinstance(v, dict):
        return 1 + sum(map(_count_dicts, v.values()))
    return sum(map(_count_dicts, v)) if isinstance(v, list) else 0


# -- hostile input: only NBMFError ---------------------------------------------------------------------
def test_deep_and_huge_legacy_payloads_are_typed_errors(stub_registry, make_legacy_blob):
    for text in ["[" * 100_000 + "]" * 100_000, "7" * 5000, '{"a": ' * 3000 + "1" + "}" * 3000]:
        blob = {"meta": {"fidelity": "lossless"}, "code": zlib.compress(text.encode()).hex(), "sig": "00"}
        with pytest.raises(NBMFError):
            stub_registry.decode(blob)
    for text in ['{"meta": ' + "[" * 100_000, '{"meta": {}, "code": "", "sig": ' + "9" * 5000 + "}"]:
        with pytest.raises(NBMFError):
            stub_registry.decode(text)


def test_deep_legacy_record_decodes_at_a_deep_caller_stack(stub_registry, make_legacy_blob):
    value = {9: [], 10: None}
    for _ in range(400):
        value = {10: value, 9: "x"}  # numeric key order at every level
    blob = make_legacy_blob(value)
    assert deep_call(lambda: stub_registry.decode(blob)) == as_stored(value)


def test_legacy_memory_error_is_typed(stub_registry, make_legacy_blob, monkeypatch):
    def no_memory(_):
        raise MemoryError
    monkeypatch.setattr(legacy, "parse_json", no_memory)
    with pytest.raises(OutputTooLargeError, match="memory"):
        stub_registry.decode(make_legacy_blob({"a": 1}))


hostile_json = st.one_of(
    st.lists(st.sampled_from(["[", "]", "{", "}", '"a":', ",", "1", "NaN", "-Infinity", '"\\ud800"', "9" * 4400,
                              '"10":', '"9":', "null", '"']), max_size=40).map("".join),
    st.integers(0, 2000).map(lambda n: "[" * n + "]" * n),
)


@settings(max_examples=200, deadline=None)
@given(st.one_of(hostile_json.map(lambda t: zlib.compress(t.encode("utf-8", "surrogatepass")).hex()),
                 st.binary(max_size=40).map(bytes.hex), st.text(max_size=20)),
       st.sampled_from(["lossless", "semantic", None, ["x"] * 3]), st.sampled_from(["00" * 32, None, 7]),
       st.integers(0, 1 << 20))
def test_hostile_legacy_blobs_only_raise_nbmf_errors(stub_registry, code, fidelity, sig, limit):
    blob = {"meta": {"fidelity": fidelity}, "code": code, "sig": sig}
    for form in (blob, json.dumps(blob)):
        try:
            stub_registry.decode(form, max_output_size=limit)
        except NBMFError:
            pass


def signed_in_order(keys: list[str]) -> dict:
    """A legacy blob of {key: i} whose sig covers the keys in exactly the given order (a forger's choice)."""
    import hashlib

    obj = {k: i for i, k in enumerate(keys)}
    return {"meta": {"fidelity": "lossless"}, "code": zlib.compress(json.dumps(obj).encode(), 9).hex(),
            "sig": hashlib.sha256(json.dumps(obj).encode()).hexdigest()}


@pytest.mark.parametrize("keys, honest", [
    (["9.0", "10"], True),  # {9.0: 0, 10: 1}: 9.0 < 10
    (["-2", "-1", "0.5", "true", "Infinity"], True),
    (["9.00", "10"], False),  # no float is spelled "9.00": only a string key, sorted as a string
    (["9", "010"], False), (["9", " 10"], False), (["9", "+10"], False), (["9", "1e1"], False),
    (["true", "1"], False),  # True and 1 are one key: no dict had both
    (["null", "-5"], False),  # None next to a number: the old stub's sort raised, it never signed this
    (["9", "10", "a"], False),  # str next to numbers: the same
])
def test_only_orders_the_old_stub_could_sign_verify(stub_registry, keys, honest):
    assert sorted(keys) != keys  # string order would not verify: only a numeric reading can
    if honest:
        assert list(stub_registry.decode(signed_in_order(keys))) == keys
    else:
        with pytest.raises(LegacySignatureError):
            stub_registry.decode(signed_in_order(keys))
