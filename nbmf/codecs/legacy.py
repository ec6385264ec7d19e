"""Blobs the old stub service wrote: ``{"meta": {...}, "code": <hex>, "sig": <sha256 hex>}``.

lossless: code = hex(zlib(json.dumps(payload, ensure_ascii=False))), sig = sha256(json.dumps(payload,
sort_keys=True, ensure_ascii=False)). semantic: canonical = " ".join(text.split()) for text, else
json.dumps(payload, ensure_ascii=False, sort_keys=True); code = hex(UTF-8 of its first 2048 characters);
sig = sha256(canonical). They stay readable forever: decode + signature check.
"""
from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass

from nbmf.blob import is_legacy
from nbmf.errors import CorruptBlobError, FormatError, LegacySignatureError, OutputTooLargeError

PREVIEW_CHARS = 2048


@dataclass(frozen=True)
class LegacyDecoded:
    payload: object
    fidelity: str  # "lossless" | "semantic"
    truncated: bool  # semantic preview shorter than the canonical form it was cut from


def parse(blob) -> dict | None:
    """The legacy dict if ``blob`` is one (dict, or JSON text/bytes of one), else None."""
    if isinstance(blob, dict):
        obj = blob
    elif isinstance(blob, (bytes, bytearray, memoryview, str)):
        if not is_legacy(blob):
            return None
        data = bytes(blob) if not isinstance(blob, str) else blob.encode("utf-8", "surrogatepass")
        try:
            obj = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise FormatError("blob starts like a legacy JSON blob but is not valid JSON") from None
    else:
        return None
    if not isinstance(obj, dict) or not {"meta", "code", "sig"} <= set(obj):
        raise FormatError("a legacy blob is an object with 'meta', 'code' and 'sig'")
    return obj


def _unhex(code) -> bytes:
    try:
        return bytes.fromhex(code)
    except (TypeError, ValueError):
        raise CorruptBlobError("legacy blob 'code' is not hex: it was damaged") from None


def decode(obj: dict, max_output_size: int) -> LegacyDecoded:
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
            payload = json.loads(raw.decode("utf-8", "surrogatepass"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise CorruptBlobError("legacy lossless code does not hold JSON: the blob was damaged") from None
        canon = json.dumps(payload, sort_keys=True, ensure_ascii=False)
        if not _sig_matches(obj, canon):
            # the old stub signed the Python object: int dict keys sorted as ints (9 < 10), but they
            # come back from JSON as strings ('10' < '9'); sign again with digit keys as ints
            try:
                alt = json.dumps(_int_keys(payload), sort_keys=True, ensure_ascii=False)
            except TypeError:  # mixed int/str keys cannot be sorted: the old stub could not have signed it
                alt = None
            if alt is None or not _sig_matches(obj, alt):
                raise LegacySignatureError("legacy blob fails its sha256 signature: it was damaged or edited")
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
    raise FormatError(f"legacy blob has unknown fidelity {fidelity!r}")


def _sig_matches(obj: dict, canon: str) -> bool:
    return hashlib.sha256(canon.encode("utf-8", "surrogatepass")).hexdigest() == obj["sig"]


def _int_keys(value):
    """JSON value with dict keys that spell integers turned back into ints (how they were signed)."""
    if isinstance(value, dict):
        return {(int(k) if k.lstrip("-").isdigit() and str(int(k)) == k else k): _int_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_int_keys(v) for v in value]
    return value
