"""A memory-service warm-tier store written as the service writes it (its layout, from its public code), for the
collection tests: ``<root>/records/<key>__<cls>.json`` plain or AES-256-GCM encrypted, ``<root>/blobs/<name>.json``.

Written from the layout's description, not from ``nbmf.data.service``, so the tests check the reader against it.
The AES key is given as the 32 bytes the service would derive; tests pick ``DAENA_MEMORY_AES_KEY`` values whose
derivation they know.
"""
from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def record_key(record_id: str, tenant: str = "default") -> str:
    key = record_id.replace("/", "_")
    return key if tenant == "default" else f"{tenant}:{key}"


def encrypt(doc: dict, key: bytes) -> dict:
    """The service's encrypted file: AES-GCM, no associated data, over the UTF-8 JSON text of ``doc``."""
    nonce = os.urandom(12)
    ciphertext = AESGCM(key).encrypt(nonce, json.dumps(doc).encode("utf-8"), None)
    return {"__encrypted__": {"alg": "AESGCM", "nonce": base64.urlsafe_b64encode(nonce).decode(),
                              "ciphertext": base64.urlsafe_b64encode(ciphertext).decode()}}


def write_record(root: Path, record_id: str, cls: str, payload, *, tenant: str = "default",
                 key: bytes | None = None, tenant_in_meta: bool = True) -> Path:
    """One record file; encrypted when ``key`` (32 bytes) is given. Returns its path."""
    meta = {"tenant_id": tenant, "created_at": "2025-01-01T00:00:00Z"} if tenant_in_meta else {"created_at": "x"}
    doc = {"payload": payload, "meta": meta, "cls": cls}
    path = Path(root) / "records" / f"{record_key(record_id, tenant)}__{cls}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(encrypt(doc, key) if key is not None else doc, ensure_ascii=False))
    return path


def write_blob(root: Path, name: str, doc: dict) -> Path:
    path = Path(root) / "blobs" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path
