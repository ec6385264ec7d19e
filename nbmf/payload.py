"""Payloads <-> raw bytes, and the canonical (semantic-fidelity) form.

Raw bytes are what is measured and coded: UTF-8 of a text, ``json.dumps(obj, ensure_ascii=False)`` of a JSON
value, the bytes themselves otherwise. 'surrogatepass' keeps lone surrogates lossless.

A JSON payload is stored only if it comes back exactly (``from_raw(*to_raw(v)) == v``): string dict keys,
lists (not tuples), finite floats, integers of at most ``MAX_INT_DIGITS`` digits, nesting of at most
``MAX_DEPTH`` levels. Anything else is refused with a ``PayloadError`` naming where it is, rather than stored
as something else. Stored JSON is read back whatever the caller's stack depth.

>>> to_raw({"a": [1, "é"]})
(b'{"a": [1, "\\xc3\\xa9"]}', <Kind.JSON: 1>)
>>> from_raw(*to_raw("héllo")) == "héllo"
True
>>> canonical(b"  Hello \\n  world ", Kind.TEXT)
b'Hello world'
>>> to_raw({"ok": [{1: "a", "1": "b"}]})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
nbmf.errors.PayloadError: payload at $["ok"][0] has a dict key 1 (int); JSON keys are strings, it would come back...
"""
from __future__ import annotations

import json
import math
import reprlib
import threading
import unicodedata
from itertools import repeat

from nbmf.blob import Kind
from nbmf.errors import CorruptBlobError, PayloadError

# Nesting levels (a scalar is 0, [] is 1). Real records nest under 10 (the corpus: at most 7). Python's C
# json parser and encoder recurse once per level under the interpreter's recursion limit (1000 by default),
# so even on a fresh thread they stop near 990 levels; 512 stays well inside that, bounds the C stack a
# parse may use however high a program sets the recursion limit, and leaves a caller half of the default
# stack to walk the value it gets back (a Ray pickle, an HTTP response encoder).
MAX_DEPTH = 512
# Digits of an integer. Python refuses to convert longer ones to or from decimal text by default
# (sys.get_int_max_str_digits(): quadratic-time conversions are a denial-of-service risk), so a blob holding
# one could not be read by a default reader: refused when writing, CorruptBlobError when reading.
MAX_INT_DIGITS = 4300
_INT_BOUND = 10**MAX_INT_DIGITS

_BRACKET_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 / -1 as int8
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_STR_TYPE = repeat(str)


def infer_kind(payload) -> Kind:
    if isinstance(payload, str):
        return Kind.TEXT
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return Kind.BYTES
    return Kind.JSON


def to_raw(payload, kind: Kind | str | None = None) -> tuple[bytes, Kind]:
    """(raw bytes, kind) of a payload; ``kind`` None infers it from the Python type.

    A JSON value that would not come back exactly raises ``PayloadError`` (see the module docstring).
    """
    kind = infer_kind(payload) if kind is None else Kind.of(kind)
    if kind == Kind.TEXT:
        if not isinstance(payload, str):
            raise TypeError(f"a text payload is a str, not {type(payload).__name__}")
        return payload.encode("utf-8", "surrogatepass"), kind
    if kind == Kind.BYTES:
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise TypeError(f"a bytes payload is bytes, not {type(payload).__name__}")
        return bytes(payload), kind
    check_json(payload)
    try:
        text = dump_json(payload, ensure_ascii=False)
    except ValueError as e:  # a program that set sys.set_int_max_str_digits below MAX_INT_DIGITS
        raise PayloadError(f"payload cannot be written as JSON here: {e}") from None
    return text.encode("utf-8", "surrogatepass"), kind


def from_raw(raw: bytes, kind: Kind):
    """The payload whose raw bytes are ``raw``; undecodable bytes mean a damaged or mislabelled blob."""
    kind = Kind.of(kind)
    if kind == Kind.BYTES:
        return bytes(raw)
    try:
        text = bytes(raw).decode("utf-8", "surrogatepass")
    except UnicodeDecodeError as e:
        raise CorruptBlobError(f"decoded bytes are not valid {kind.label} ({e}): the blob is damaged") from None
    return text if kind == Kind.TEXT else parse_json(text)


def canonical(raw: bytes | str, kind: Kind | str) -> bytes:
    """Semantic form: text -> NFC with whitespace runs collapsed; JSON -> compact, sorted keys; bytes unchanged.

    ``raw`` is the raw bytes (a str is taken as its UTF-8); ``kind`` a Kind or its name.
    """
    kind = Kind.of(kind)
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if kind == Kind.BYTES:
        return bytes(raw)
    if kind == Kind.TEXT:
        text = from_raw(raw, kind)
        return " ".join(unicodedata.normalize("NFC", text).split()).encode("utf-8", "surrogatepass")
    obj = from_raw(raw, kind)
    text = dump_json(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return text.encode("utf-8", "surrogatepass")


# -- JSON rules ---------------------------------------------------------------------------------------
def check_json(value) -> int:
    """Nesting depth of ``value`` if it is JSON that round-trips exactly, else ``PayloadError`` naming the path.

    One iterative pass (an explicit stack, so no nesting can exhaust Python's own): containers are pushed
    with a link to their parent's path, which is spelled out only for the error message.
    """
    problem = _scalar_problem(value) if not isinstance(value, (dict, list)) else None
    if problem is not None:
        raise PayloadError(f"payload at $ is {problem}")
    deepest = 0
    stack = [(value, 1, None)] if isinstance(value, (dict, list)) else []
    while stack:
        node, depth, where = stack.pop()
        if depth > MAX_DEPTH:
            raise PayloadError(f"payload at {_path(where)} nests deeper than {MAX_DEPTH} levels "
                               "(nbmf.payload.MAX_DEPTH); flatten it or store it as text")
        deepest = max(deepest, depth)
        if isinstance(node, dict):
            items = node.items()
            if not all(map(isinstance, node, _STR_TYPE)):  # all keys str: checked at C speed
                key = next(k for k in node if not isinstance(k, str))
                raise PayloadError(f"payload at {_path(where)} has a dict key {reprlib.repr(key)} "
                                   f"({type(key).__name__}); JSON keys are strings, it would come back as "
                                   f"{_spelled_key(key)}: convert the keys to str first")
        else:
            items = enumerate(node)
        for key, v in items:
            t = type(v)
            # exact-type fast path for the common scalars; subclasses and everything else are checked below
            if t is str or t is bool or v is None or (t is int and -_INT_BOUND < v < _INT_BOUND) or (
                    t is float and v - v == 0):  # inf - inf and nan - nan are nan
                continue
            if isinstance(v, (dict, list)):
                stack.append((v, depth + 1, (where, key)))
                continue
            problem = _scalar_problem(v)
            if problem is not None:
                raise PayloadError(f"payload at {_path((where, key))} is {problem}")
    return deepest


def _scalar_problem(v) -> str | None:
    """Why a non-container ``v`` would not come back from JSON as itself, or None if it would."""
    if v is None or isinstance(v, (str, bool)):
        return None
    if isinstance(v, int):
        if -_INT_BOUND < v < _INT_BOUND:
            return None
        return f"an integer of more than {MAX_INT_DIGITS} digits (nbmf.payload.MAX_INT_DIGITS): store it as a string"
    if isinstance(v, float):
        return None if math.isfinite(v) else f"{v!r}, which JSON cannot spell: store None or a string instead"
    if isinstance(v, tuple):
        return "a tuple; JSON would return a list: pass a list"
    return f"of type {type(v).__name__}, not a JSON type (dict, list, str, int, float, bool, None)"


def _path(where) -> str:
    """``$["a"][3]`` from the (parent link, key) chain ``check_json`` builds."""
    parts = []
    while where is not None:
        where, key = where
        parts.append(f"[{key}]" if isinstance(key, int) else f"[{json.dumps(key)}]")
    parts.reverse()
    if len(parts) > 12:  # a path past the depth limit would fill the screen
        parts[6:-3] = [f"...{len(parts) - 9} more..."]
    return "$" + "".join(parts)


def _spelled_key(key) -> str:
    try:
        return json.dumps({key: 0})[1:-4]  # '{"1": 0}' -> '"1"'
    except (TypeError, ValueError):
        return "nothing (json.dumps refuses it)"


# -- JSON at any stack depth --------------------------------------------------------------------------
def nesting(text: str) -> int:
    """The deepest bracket nesting of JSON ``text`` outside string literals (0 for a scalar)."""
    import numpy as np  # a dependency of nbmf anyway; only texts with over MAX_DEPTH brackets get here

    # without escaped backslashes, then escaped quotes, every other '"'-separated piece is a string literal;
    # all C-speed string operations: ~4x faster than a regex over the literals on a 20 KB record
    outside = "".join(text.replace("\\\\", "").replace('\\"', "").split('"')[::2])
    steps = outside.encode("utf-8", "surrogatepass").translate(_BRACKET_STEPS, _NOT_BRACKETS)
    return int(np.cumsum(np.frombuffer(steps, np.int8), dtype=np.int64).max(initial=0))


def parse_json(text: str):
    """``json.loads(text)`` for stored JSON: ``CorruptBlobError`` (never RecursionError/ValueError) for text that
    is not JSON, nests past ``MAX_DEPTH`` or holds an integer Python will not read; works at any stack depth."""
    # a text with at most MAX_DEPTH brackets cannot nest deeper: the exact (slower) scan only runs past that
    if text.count("[") + text.count("{") > MAX_DEPTH and (depth := nesting(text)) > MAX_DEPTH:
        raise CorruptBlobError(f"stored JSON nests {depth} levels, deeper than the {MAX_DEPTH} "
                               "(nbmf.payload.MAX_DEPTH) any NBMF writer allows: the blob is damaged or forged")
    try:
        return _any_stack(json.loads, text)
    except json.JSONDecodeError as e:
        raise CorruptBlobError(f"decoded bytes are not valid JSON ({e}): the blob is damaged") from None
    except ValueError as e:  # int/str conversion limit (sys.get_int_max_str_digits)
        raise CorruptBlobError(f"stored JSON holds an integer Python refuses to read ({e}); no NBMF writer "
                               f"stores more than {MAX_INT_DIGITS} digits: the blob is damaged or forged") from None
    except RecursionError:  # only with a recursion limit set far below the default
        raise CorruptBlobError(f"stored JSON nests too deep to parse under this interpreter's recursion "
                               f"limit (nesting up to {MAX_DEPTH} is valid)") from None


def dump_json(value, **kw) -> str:
    """``json.dumps(value, **kw)`` at any stack depth (``value`` nests at most ``MAX_DEPTH``: check_json)."""
    return _any_stack(json.dumps, value, **kw)


def _any_stack(fn, *args, **kw):
    """``fn(*args, **kw)`` for a recursive C json call: inline (the fast, usual path), or, when the caller's
    stack leaves too little room for the nesting, again on a fresh thread's empty stack. json's C code
    raises RecursionError cleanly (no partial state), so the retry is safe."""
    try:
        return fn(*args, **kw)
    except RecursionError:
        pass
    out: dict = {}

    def run():
        try:
            out["value"] = fn(*args, **kw)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread below
            out["error"] = e

    t = threading.Thread(target=run, name="nbmf-json", daemon=True)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]
