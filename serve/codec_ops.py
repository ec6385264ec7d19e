"""The only place serve/ touches the codec library: versions on disk, loading, encode/decode of items.

Deployments stay thin (STYLE.md): they parse, route and call these plain functions, which run and are
tested without Ray. Items crossing the ingress -> model boundary are plain tuples so they pickle cheaply:
an encode item is ``(payload, kind, fidelity)``, a decode item is blob bytes.
"""
from __future__ import annotations

import importlib
import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nbmf import modeldir
from nbmf.blob import blob_version, from_envelope, peek_header, to_envelope, unpack
from nbmf.errors import NBMFError
from nbmf.modeldir import default_model_dir, version_name
from nbmf.registry import Registry

__all__ = ["DecodeOutcome", "VersionModel", "blob_version", "current_version", "from_envelope",
           "import_loader", "list_versions", "load_codec", "resolve_model_dir", "stub_registry",
           "to_envelope", "version_name", "encode_items", "decode_items"]



def resolve_model_dir(model_dir: str | os.PathLike | None) -> Path:
    """``model_dir`` if given, else the library's default (env NBMF_MODEL_DIR, else ``<repo>/models``)."""
    return Path(model_dir) if model_dir is not None else default_model_dir()


def list_versions(model_dir: Path) -> list[str]:
    """Neural versions present in the model registry directory (``vN/manifest.json``), by id."""
    return modeldir.versions(model_dir)


def current_version(model_dir: Path) -> str:
    """The model dir's ``CURRENT``, ``stub`` when it has none; one naming a version not held raises
    UnknownVersionError (the same rule as the library's Registry)."""
    return modeldir.current(model_dir) or "stub"


def manifest_summary(model_dir: Path, version: str) -> dict:
    """What /v1/versions shows about a version (unverified read: listing must stay cheap)."""
    try:
        m = json.loads((model_dir / version / modeldir.MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return {"name": version, "error": f"unreadable manifest: {e}"}
    arch = m.get("architecture") or {}
    return {"name": version, "encoder_id": m.get("encoder_id"), "family": arch.get("family"),
            "training_data": m.get("training_data"), "metrics": m.get("metrics") or {}}


def load_codec(model_dir: str, version: str):
    """Default loader: the neural codec artifact ``<model_dir>/<version>`` (hashes verified)."""
    from nbmf.codecs.neural import load_codec as load  # numba/numpy only; imported where needed

    return load(Path(model_dir) / version)


def import_loader(spec: str) -> Callable[[str, str], object]:
    """``"package.module:function"`` -> the function (loaders are injected so tests can swap them)."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def stub_registry() -> Registry:
    """A registry that holds only the stub (and reads legacy blobs): what the ingress runs locally."""
    return Registry()


@dataclass(frozen=True)
class DecodeOutcome:
    """A decoded record, or the client error that its blob caused (never an infrastructure failure)."""

    payload: object = None
    kind: str = ""
    fidelity: str = ""
    version: str = ""
    truncated: bool = False
    error: str | None = None  # NBMFError subclass name
    message: str | None = None


def _name(x) -> str:
    """Enum or str -> lower-case name (``Kind.TEXT`` -> ``text``)."""
    return (getattr(x, "name", None) or str(x)).lower()


def _outcome(r) -> DecodeOutcome:
    return DecodeOutcome(payload=r.payload, kind=_name(r.kind), fidelity=_name(r.fidelity), version=r.version,
                         truncated=bool(r.truncated))


def decode_items(registry: Registry, blobs: Sequence[bytes | dict], max_output_size: int) -> list[DecodeOutcome]:
    """Decode each blob; a bad blob becomes an outcome with ``error`` set, the others still decode.

    One ``decode_many`` call (each version's blobs decode as one batch); only when it raises are the
    blobs decoded one by one to find which of them is bad.
    """
    try:
        return [_outcome(r) for r in registry.decode_many(list(blobs), max_output_size=max_output_size)]
    except NBMFError:
        if len(blobs) == 1:
            return [_decode_one(registry, blobs[0], max_output_size)]
    return [_decode_one(registry, b, max_output_size) for b in blobs]


def _decode_one(registry: Registry, blob, max_output_size: int) -> DecodeOutcome:
    try:
        return _outcome(registry.decode_result(blob, max_output_size=max_output_size))
    except NBMFError as e:
        return DecodeOutcome(error=type(e).__name__, message=str(e))


def encode_items(registry: Registry, version: str, items: Sequence[tuple]) -> list[tuple[bytes, str | None]]:
    """Encode ``(payload, kind, fidelity)`` items with ``version``: ``(blob, fallback_reason)`` each.

    One ``encode_many`` call per fidelity. The registry's safety net (verified round trip, never
    larger than the stub) may write stub blobs; it counts why per version ("v1:larger"), and that
    reason is reported with each such blob ("mixed" when one call fell back for several reasons).
    """
    out: list = [None] * len(items)
    by_fidelity: dict[str, list[int]] = {}
    for i, (_, _, fidelity) in enumerate(items):
        by_fidelity.setdefault(fidelity, []).append(i)
    for fidelity, idx in by_fidelity.items():
        before = Counter(registry.stats.fallbacks)
        blobs = registry.encode_many([items[i][0] for i in idx], fidelity=fidelity, version=version,
                                     kinds=[items[i][1] for i in idx])
        grew = {key.rpartition(":")[2] for key, n in registry.stats.fallbacks.items() if n > before[key]}
        reason = (grew.pop() if len(grew) == 1 else "mixed") if grew else None
        for i, blob in zip(idx, blobs):
            fell_back = version != "stub" and peek_header(blob).encoder_id == 0
            out[i] = (blob, reason or "codec" if fell_back else None)
    return out


class VersionModel:
    """One loaded neural version (what the multiplexed loader returns): a registry of stub + codec."""

    def __init__(self, version: str, codec):
        self.version = version
        self.codec = codec
        self.registry = Registry()
        self.registry.register(codec)

    def encode(self, items: Sequence[tuple]) -> list[tuple[bytes, str | None]]:
        return encode_items(self.registry, self.version, items)

    def decode(self, blobs: Sequence[bytes], max_output_size: int) -> list[DecodeOutcome]:
        return decode_items(self.registry, blobs, max_output_size)


def check_blob(blob: bytes):
    """The header, after verifying the checksum: a corrupt blob is the client's error, found before routing."""
    header, _ = unpack(blob)
    return header
