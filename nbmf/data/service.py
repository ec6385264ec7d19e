"""The memory service's warm tier as a `nbmf collect` source: one JSON file per record, plain or AES-GCM.

Layout (the service's own code writes it):

    ROOT/records/<key>__<cls>.json   {"payload": <any JSON value>, "meta": {"tenant_id": ..., ...}, "cls": <cls>}
    ROOT/blobs/<name>.json           other JSON documents: not records, not collected

``<key>`` is the record id with "/" replaced by "_", prefixed "<tenant>:" for a tenant other than "default".
With ``DAENA_MEMORY_AES_KEY`` set, the service writes ``{"__encrypted__": {"alg": "AESGCM", "nonce", "ciphertext"}}``
instead (urlsafe base64 fields): AES-256-GCM without associated data over the UTF-8 JSON text of that dict, keyed
by ``aes_key`` of the variable's value.

Each file becomes one ``Record`` through ``nbmf.record.from_corpus`` (raw bytes ``nbmf.payload.to_raw`` of the
payload, type inferred from it): id the file's ``<key>``, domain the tenant ("default" is "general"), fidelity
the class's by the service's policy (``CLASS_FIDELITY``, overridable); a semantic record holds the canonical form
(``nbmf.payload.canonical``), as an L2 row of that fidelity does. A file that cannot be read, decrypted or parsed
is a ``BadLine`` naming the file and the error, never its decrypted content: decrypted text goes only into the
records (the dataset the caller asked for).
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from nbmf.blob import Fidelity
from nbmf.data.sources import BadLine
from nbmf.extras import require
from nbmf.payload import canonical
from nbmf.record import Record, from_corpus

KEY_ENV = "DAENA_MEMORY_AES_KEY"
# The service's policy, class -> fidelity (configurable there: pass the same overrides to collect).
CLASS_FIDELITY = {"legal": "lossless", "finance": "lossless", "pii": "lossless",
                  "chat": "semantic", "ops_log": "semantic", "research_note": "semantic"}
UNKNOWN_CLASS_FIDELITY = "lossless"  # a class the policy does not name: keep its exact bytes
DEFAULT_TENANT = "default"


def is_store(path: Path) -> bool:
    """Whether ``path`` is a directory in the service's warm-tier layout: a records/ directory holding at least
    one ``<key>__<cls>.json`` file."""
    records = Path(path) / "records"
    return records.is_dir() and next(records.glob("*__*.json"), None) is not None


def record_files(root: Path) -> list[Path]:
    records = Path(root) / "records"
    return sorted(p for p in records.iterdir() if p.suffix.lower() == ".json" and p.is_file())


def aes_key(value: str) -> bytes:
    """The AES-256 key of a ``DAENA_MEMORY_AES_KEY`` value, as the service derives it: sha256 of the value decoded
    as urlsafe base64, else standard base64, else hex, else its UTF-8 (the first that gives non-empty bytes)."""
    for decode in (base64.urlsafe_b64decode, base64.b64decode, bytes.fromhex):
        try:
            secret = decode(value)
        except (binascii.Error, ValueError):
            continue
        if secret:
            return hashlib.sha256(secret).digest()
    return hashlib.sha256(value.encode("utf-8")).digest()


class BadFile(Exception):
    """One file's failure; its message is the bad line's reason."""


def decrypt(envelope, key: bytes | None) -> bytes:
    """The plaintext of an ``__encrypted__`` object; BadFile when it cannot be had."""
    if key is None:
        raise BadFile(f"the file is encrypted (AES-GCM): set {KEY_ENV} to the memory service's key to collect it")
    if not isinstance(envelope, dict) or envelope.get("alg") != "AESGCM":
        alg = envelope.get("alg") if isinstance(envelope, dict) else None
        raise BadFile(f"unsupported encryption {alg!r}: the service writes alg 'AESGCM'")
    try:
        nonce = base64.urlsafe_b64decode(envelope["nonce"])
        ciphertext = base64.urlsafe_b64decode(envelope["ciphertext"])
    except (KeyError, TypeError, ValueError, binascii.Error) as e:
        raise BadFile(f"damaged encrypted file: nonce/ciphertext are not urlsafe base64 ({type(e).__name__})") from None
    aead = require("cryptography.hazmat.primitives.ciphers.aead")
    exceptions = require("cryptography.exceptions")
    try:
        return aead.AESGCM(key).decrypt(nonce, ciphertext, None)
    except (exceptions.InvalidTag, ValueError) as e:  # ValueError: a nonce of the wrong length
        raise BadFile(f"cannot decrypt ({type(e).__name__}): {KEY_ENV} is not the key this file was written with, "
                      "or the file is damaged") from None


def _json(data: bytes, what: str):
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise BadFile(f"{what} is not UTF-8 (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise BadFile(f"{what} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except (ValueError, RecursionError) as e:  # valid JSON Python will not build: too deep, too long a number
        raise BadFile(f"{what} is unreadable JSON ({type(e).__name__})") from None


def domain_of(tenant: str) -> str:
    """A tenant id as a record domain: the service's "default" tenant is the data model's "general"."""
    return "general" if tenant == DEFAULT_TENANT else tenant


def parse_class_fidelity(items) -> tuple[tuple[str, str], ...]:
    """``CLS=FIDELITY`` strings (the --class-fidelity options) -> (class, fidelity) pairs; ValueError for a bad one.

    >>> parse_class_fidelity(["chat=lossless"])
    (('chat', 'lossless'),)
    """
    pairs = []
    for item in items:
        cls, sep, fidelity = item.partition("=")
        if not sep or not cls:
            raise ValueError(f"--class-fidelity takes CLS=FIDELITY (e.g. chat=lossless), not {item!r}")
        pairs.append((cls, Fidelity.of(fidelity).label))
    return tuple(pairs)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One records/ file read: its Record, the service's class, and the bytes of its plain JSON text (the
    decrypted text of an encrypted file: what the service stores per record before encryption)."""

    record: Record
    cls: str
    plain_bytes: int


def read_record(path: Path, source: str, key: bytes | None, class_fidelity: Mapping[str, str]) -> Record:
    """The Record of one records/ file; BadFile for anything that keeps it from being one."""
    return read_entry(path, source, key, class_fidelity).record


def read_entry(path: Path, source: str, key: bytes | None, class_fidelity: Mapping[str, str]) -> Entry:
    """``read_record``, with the file's class and plain JSON size."""
    key_part, sep, file_cls = path.stem.rpartition("__")
    if not sep or not key_part:
        raise BadFile("not a record file: the service names them <key>__<cls>.json")
    plain = path.read_bytes()
    obj = _json(plain, "the file")
    encrypted = isinstance(obj, dict) and "__encrypted__" in obj
    if encrypted:
        plain = decrypt(obj["__encrypted__"], key)
        obj = _json(plain, "the decrypted text")
    if not isinstance(obj, dict) or "payload" not in obj:
        raise BadFile("not a memory-service record: a JSON object with a 'payload' field is required")
    meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    tenant = meta.get("tenant_id")
    if not isinstance(tenant, str) or not tenant:
        tenant = key_part.partition(":")[0] if ":" in key_part else DEFAULT_TENANT
    cls = obj.get("cls") if isinstance(obj.get("cls"), str) and obj.get("cls") else file_cls
    fidelity = Fidelity.of(class_fidelity.get(cls, UNKNOWN_CLASS_FIDELITY))
    try:
        rec = from_corpus({"id": key_part, "domain": domain_of(tenant), "data": obj["payload"]},
                          origin=str(path), source=source)
        if fidelity == Fidelity.SEMANTIC:
            rec = dataclasses.replace(rec, fidelity=fidelity, raw=canonical(rec.raw, rec.kind))
    except (ValueError, RecursionError) as e:  # a payload nbmf.payload refuses (PayloadError), e.g. NaN
        if encrypted:  # its message names a place in the payload: decrypted content stays out of reports
            raise BadFile(f"the payload is not storable JSON ({type(e).__name__}; details withheld: "
                          "the file is encrypted)") from None
        raise BadFile(f"{type(e).__name__}: {e}") from None
    return Entry(rec, cls, len(plain))


def key_from(environ: Mapping[str, str] = os.environ) -> bytes | None:
    """The AES key of ``environ[KEY_ENV]``; None when it is unset or empty."""
    value = environ.get(KEY_ENV)
    return aes_key(value) if value else None


def source_name(root: Path) -> str:
    return f"service:{Path(root).resolve().name}"


def iter_store(root: Path, progress, class_fidelity: Mapping[str, str] | None = None,
               environ: Mapping[str, str] = os.environ) -> Iterator:
    """Records and BadLines of a warm-tier store, file by file in name order; ``class_fidelity`` overrides
    entries of ``CLASS_FIDELITY``; the key comes from ``environ[KEY_ENV]`` (unset or empty: none)."""
    policy = {**CLASS_FIDELITY, **(class_fidelity or {})}
    key = key_from(environ)
    source = source_name(root)
    for path in record_files(root):
        try:
            progress(path.stat().st_size)
            yield read_record(path, source, key, policy)
        except BadFile as e:
            yield BadLine(str(path), str(e))
        except OSError as e:  # one file vanished or is unreadable: that file's failure
            yield BadLine(str(path), f"{type(e).__name__}: {e.strerror or e}")
