"""Blobs the old stub service wrote: ``{"meta": {...}, "code": <hex>, "sig": <sha256 hex>}``.

lossless: code = hex(zlib(json.dumps(payload, ensure_ascii=False))), sig = sha256(json.dumps(payload,
sort_keys=True, ensure_ascii=False)). semantic: canonical = " ".join(text.split()) for text, else
json.dumps(payload, ensure_ascii=False, sort_keys=True); code = hex(UTF-8 of its first 2048 characters);
sig = sha256(canonical). They stay readable forever: decode + signature check.

The lossless sig was taken over the ORIGINAL Python object, whose dict keys may have been numbers, bools or
None: json sorted those by value (9 < 10, 1.5 < 2) and only then spelled them as strings, so what comes back
has string keys whose string order may differ from the signed one. ``_signed_forms`` rebuilds the orders the
old stub could have used; the check itself (sha256 over the exact text) is unchanged.
"""
from __future__ import annotations

import hashlib
import json
import math
import reprlib
import zlib
from dataclasses import dataclass
from itertools import product

from nbmf.blob import is_legacy
from nbmf.errors import CorruptBlobError, FormatError, LegacySignatureError, OutputTooLargeError
from nbmf.payload import dump_json, parse_json

PREVIEW_CHARS = 2048
# A lossless blob whose dicts may each have been signed in string or numeric key order has 2**k possible
# signed texts (k = such dicts). Honest blobs need 1-2 (one source, one key type); a forged one could ask for
# billions. At most this many orders are signed per blob, and at most SIG_BUDGET_BYTES of text in all
# (payloads run to max_output_size, 64 MiB by default); past either, LegacySignatureError.
MAX_SIGNED_ORDERS = 256
SIG_BUDGET_BYTES = 64 << 20


@dataclass(frozen=True)
class LegacyDecoded:
    payload: object
    fidelity: str  # "lossless" | "semantic"
    truncated: bool  # semantic preview shorter than the canonical form it was cut from


def json_object(blob) -> dict | None:
    """The JSON object of a blob given as JSON: a dict as it is, JSON text or bytes that start with '{' parsed;
    None for anything else (a binary blob). Both JSON forms are objects: a legacy stub blob and an envelope
    (``nbmf.registry.as_blob`` tells them apart). Text that starts with '{' but does not parse is FormatError."""
    if isinstance(blob, dict):
        return blob
    if not isinstance(blob, (bytes, bytearray, memoryview, str)) or not is_legacy(blob):
        return None
    try:
        text = blob if isinstance(blob, str) else bytes(blob).decode(json.detect_encoding(blob), "surrogatepass")
        obj = parse_json(text)
    except (CorruptBlobError, UnicodeDecodeError, MemoryError) as e:
        raise FormatError(f"blob starts like JSON (a legacy blob or an envelope) but is not valid JSON "
                          f"({type(e).__name__}: {str(e)[:200]})") from None
    return obj  # text that starts with '{' and parses is an object


def check(obj: dict) -> dict:
    """``obj`` if it has a legacy blob's structure (its fields are checked when it is decoded), else FormatError."""
    if not isinstance(obj, dict) or not {"meta", "code", "sig"} <= set(obj):
        raise FormatError("a blob given as JSON is an envelope (format, encoder, fidelity, kind, length, crc32, body, "
                          "as nbmf.to_envelope writes it) or a legacy stub blob (an object with 'meta', 'code' and "
                          "'sig'); this is neither")
    return obj


def parse(blob) -> dict | None:
    """The legacy dict if ``blob`` is one (dict, or JSON text/bytes of one), else None; FormatError for JSON of
    another structure."""
    obj = json_object(blob)
    return None if obj is None else check(obj)


def code_bytes(obj: dict) -> int | None:
    """Bytes of a parsed legacy blob's code (its hex halved), read without decoding; None when it is not text."""
    code = obj["code"]
    return len(code) // 2 if isinstance(code, str) else None


def holds_json(obj: dict) -> bool:
    """Whether a parsed legacy blob holds a JSON value rather than a text: its ``meta.type`` names the payload's
    type, spelled "str" / "dict" (Python type names) or "text" / "json" by the old stub's versions."""
    return obj["meta"].get("type") not in (None, "str", "text")


def decode(obj: dict, max_output_size: int) -> LegacyDecoded:
    """The payload of a parsed legacy blob, its signature checked; only NBMFError for any content of ``obj``."""
    if max_output_size < 0:
        raise ValueError(f"max_output_size is a byte count, not {max_output_size}")
    try:
        return _decode(obj, max_output_size)
    except MemoryError:  # hostile hex or JSON can ask for more than the process has, below max_output_size
        raise OutputTooLargeError("decoding this legacy blob ran out of memory; lower max_output_size to refuse "
                                  "such blobs early, or decode it where more memory is available") from None


def _decode(obj: dict, max_output_size: int) -> LegacyDecoded:
    meta = obj["meta"]
    if not isinstance(meta, dict):
        raise FormatError("legacy blob 'meta' must be an object")
    fidelity = meta.get("fidelity", "lossless")
    code = _unhex(obj["code"])
    if fidelity == "lossless":
        d = zlib.decompressobj()
        try:
            raw = d.decompress(code, max_output_size + 1)
        except zlib.error as e:
            raise CorruptBlobError(f"legacy lossless code is not zlib ({e}): the blob was damaged") from None
        if len(raw) > max_output_size:
            raise OutputTooLargeError(f"legacy blob inflates past max_output_size={max_output_size} bytes; "
                                      "raise the limit to read it")
        if not d.eof or d.unused_data:
            raise CorruptBlobError("legacy lossless code is truncated or has trailing data")
        try:
            payload = parse_json(raw.decode("utf-8", "surrogatepass"))
        except (UnicodeDecodeError, CorruptBlobError) as e:
            raise CorruptBlobError(f"legacy lossless code does not hold readable JSON ({e})") from None
        _verify_lossless(obj["sig"], payload)
        return LegacyDecoded(payload, "lossless", False)
    if fidelity == "semantic":
        if len(code) > max_output_size:
            raise OutputTooLargeError(f"legacy preview is {len(code)} bytes, over max_output_size={max_output_size}")
        try:
            preview = code.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise CorruptBlobError("legacy semantic preview is not UTF-8: the blob was damaged") from None
        # the sig covers the whole canonical form, so it verifies exactly the previews that were not cut;
        # a preview of the full 2048 characters that does not match it is the cut-off start of a longer one
        sig_ok = hashlib.sha256(code).hexdigest() == obj["sig"]
        if not sig_ok and len(preview) < PREVIEW_CHARS:
            raise LegacySignatureError("legacy blob fails its sha256 signature: it was damaged or edited")
        truncated = not sig_ok
        return LegacyDecoded(preview, "semantic", truncated)
    raise FormatError(f"legacy blob has unknown fidelity {reprlib.repr(fidelity)}")


def _unhex(code) -> bytes:
    try:
        return bytes.fromhex(code)
    except (TypeError, ValueError):
        raise CorruptBlobError("legacy blob 'code' is not hex: it was damaged") from None


# -- the lossless signature ---------------------------------------------------------------------------
def _verify_lossless(sig, payload) -> None:
    """Accept iff ``sig`` is sha256 of a text the old stub could have signed for ``payload``.

    That text is ``json.dumps(original, sort_keys=True, ensure_ascii=False)``. Each dict of the original had
    either all-string keys (signed in string order, as ``payload`` sorts) or all number/bool/None keys
    (signed in the order of their values); a dict mixing the two could not be sorted, so was never written.
    Every dict whose two orders differ doubles the candidates: all-string and all-numeric (one source, one
    key type) are tried first, the other mixes only while within MAX_SIGNED_ORDERS / SIG_BUDGET_BYTES.
    """
    signed = dump_json(payload, sort_keys=True, ensure_ascii=False)
    if _sig_matches(sig, signed):
        return
    ambiguous = _numeric_orders(payload)
    if not ambiguous:
        raise LegacySignatureError("legacy blob fails its sha256 signature: it was damaged or edited")
    budget = min(MAX_SIGNED_ORDERS, max(2, SIG_BUDGET_BYTES // max(1, len(signed))))
    k = len(ambiguous)
    exhaustive = k < 63 and (1 << k) <= budget
    for numeric in product((True, False), repeat=k) if exhaustive else [(True,) * k]:
        if not any(numeric):
            continue  # all-string: the plain sort_keys form, already tried
        chosen = {id(d): order for (d, order), num in zip(ambiguous, numeric) if num}
        if _sig_matches(sig, dump_json(_reordered(payload, chosen), ensure_ascii=False)):
            return
    if exhaustive:
        raise LegacySignatureError("legacy blob fails its sha256 signature in every key order the old stub "
                                   "could have signed it in: it was damaged or edited")
    raise LegacySignatureError(
        f"legacy blob fails its sha256 signature in string and in numeric key order, and {k} of its dicts could "
        f"each have had either: checking all 2**{k} orders is past the cap of {budget} signings "
        f"(nbmf.codecs.legacy.MAX_SIGNED_ORDERS={MAX_SIGNED_ORDERS}, SIG_BUDGET_BYTES={SIG_BUDGET_BYTES}); "
        "the blob cannot be verified, so it is refused as damaged or edited")


def _sig_matches(sig, canon: str) -> bool:
    return hashlib.sha256(canon.encode("utf-8", "surrogatepass")).hexdigest() == sig


def _numeric_orders(payload) -> list[tuple[dict, list[str]]]:
    """(dict, its keys in numeric order) for every dict of ``payload`` whose keys all spell numbers, bools or
    None and whose numeric order differs from its string order. Iterative: the payload may nest 512 deep."""
    found = []
    stack = [payload]
    while stack:
        node = stack.pop()
        values = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend(v for v in values if isinstance(v, (dict, list)))
        if isinstance(node, dict) and len(node) > 1:
            order = _numeric_order(list(node))
            if order is not None and order != sorted(node):
                found.append((node, order))
    return found


_CONSTANT_KEYS = {"true": True, "false": False, "null": None, "Infinity": math.inf, "-Infinity": -math.inf}
_NOT_A_NUMBER_KEY = object()


def _key_value(key: str):
    """The non-string key json spells as ``key`` (``json.dumps({1.5: 0})`` is '{"1.5": 0}'), if any: an int
    (its repr), a float (its repr; "Infinity", "-Infinity", "NaN"), True/False ("true"/"false"), None ("null")."""
    if key in _CONSTANT_KEYS:
        return _CONSTANT_KEYS[key]
    if key == "NaN":
        return float("nan")  # a new object per key, as each NaN key of the original dict was
    for parse in (int, float):
        try:
            value = parse(key)
        except ValueError:  # not that type, or an int past the digit limit (json could not have spelled it)
            continue
        # repr must give the key back: rules out "01", "1_0", " 1", "+1", "inf", "nan" (json spells those
        # floats "Infinity" and "NaN"), which only a string key could have been
        return value if repr(value) == key and (parse is int or math.isfinite(value)) else _NOT_A_NUMBER_KEY
    return _NOT_A_NUMBER_KEY


def _numeric_order(keys: list[str]) -> list[str] | None:
    """``keys`` (in the dict's insertion order, which the lossless text keeps) as json's sort_keys put them if
    they had all been non-strings, or None if they could not all have been."""
    values = [_key_value(k) for k in keys]
    if any(v is _NOT_A_NUMBER_KEY for v in values) or len(set(values)) < len(values):  # "1" and "true": one key
        return None
    try:  # sort_keys sorts the (key, value) items: the same comparisons as sorting the keys, NaN quirks and all
        order = sorted(range(len(keys)), key=values.__getitem__)
    except TypeError:  # None next to another key: the old stub's sort failed, it never wrote such a dict
        return None
    return [keys[i] for i in order]


def _reordered(payload, chosen: dict[int, list[str]]):
    """A copy of ``payload`` whose dicts list their keys in order: ``chosen[id(dict)]`` if given, else sorted
    (so plain ``json.dumps`` writes the candidate signed text). Iterative, like the rest."""
    out = [None]
    stack = [(payload, out, 0)]
    while stack:
        node, parent, slot = stack.pop()
        if isinstance(node, dict):
            keys = chosen.get(id(node)) or sorted(node)
            new = dict.fromkeys(keys)  # key order fixed now, values filled in below
            stack.extend((node[key], new, key) for key in keys)
        elif isinstance(node, list):
            new = [None] * len(node)
            stack.extend((v, new, i) for i, v in enumerate(node))
        else:
            new = node
        parent[slot] = new
    return out[0]
