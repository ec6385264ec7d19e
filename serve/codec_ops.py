"""The only place serve/ touches the codec library: versions on disk, loading, encode/decode of items.

Deployments stay thin (STYLE.md): they parse, route and call these plain functions, which run and are
tested without Ray. Items crossing the ingress -> model boundary are plain tuples so they pickle cheaply:
an encode item is ``(payload, kind, fidelity)``, a decode item is blob bytes.
"""
from __future__ import annotations

import importlib
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nbmf import modeldir
from nbmf.blob import blob_version, from_envelope, is_legacy, peek_header, to_envelope, unpack
from nbmf.codecs import legacy
from nbmf.errors import ArtifactError, NBMFError
from nbmf.modeldir import default_model_dir, version_name
from nbmf.payload import to_raw
from nbmf.registry import Registry, as_blob

__all__ = ["DecodeOutcome", "VersionModel", "as_blob", "blob_version", "is_legacy", "claimed_output", "current_version",
           "decode_each", "domain_versions",
           "failed_outcomes", "from_envelope", "import_loader", "input_size", "legacy_limits", "list_versions",
           "load_codec", "resolve_model_dir", "stub_registry", "to_envelope", "version_name", "encode_items",
           "decode_items"]

log = logging.getLogger("ray.serve")


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


def domain_versions(model_dir: Path) -> dict[str, str]:
    """The model dir's DOMAINS.json: domain -> its own version ({} without one; broken: raises, as the Registry)."""
    return modeldir.domain_versions(model_dir)


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


def failed_outcomes(n: int, error: Exception) -> list[DecodeOutcome]:
    """``n`` outcomes of one failure that belongs to the blobs (a deadline passed while decoding them)."""
    return [DecodeOutcome(error=type(error).__name__, message=str(error))] * n


# What a decode of client bytes can raise that is the blob's fault, not the service's. The library types its
# refusals (NBMFError), but a blob is hostile by assumption: an untyped ValueError or RecursionError from it
# (a library bug) must still be that blob's 4xx, answered once, never a 500 or a retried 503. ArtifactError is
# the model's fault: it stays an exception, which the ingress retries.
_UNTYPED = (ValueError, RecursionError)


def decode_items(registry: Registry, blobs: Sequence[bytes | dict], max_output_size: int) -> list[DecodeOutcome]:
    """Decode each blob; a bad blob becomes an outcome with ``error`` set, the others still decode.

    One ``decode_many`` call (each version's blobs decode as one batch); only when it raises are the
    blobs decoded one by one to find which of them is bad.
    """
    try:
        return [_outcome(r) for r in registry.decode_many(list(blobs), max_output_size=max_output_size)]
    except ArtifactError:
        raise
    except (NBMFError, *_UNTYPED):
        if len(blobs) == 1:
            return [_decode_one(registry, blobs[0], max_output_size)]
    return [_decode_one(registry, b, max_output_size) for b in blobs]


def decode_each(registry: Registry, blobs: Sequence[bytes | dict], limits: Sequence[int]) -> list[DecodeOutcome]:
    """Decode blob i with ``max_output_size=limits[i]`` (legacy blobs in a batch: see ``legacy_limits``)."""
    return [_decode_one(registry, b, limit) for b, limit in zip(blobs, limits)]


def _decode_one(registry: Registry, blob, max_output_size: int) -> DecodeOutcome:
    try:
        return _outcome(registry.decode_result(blob, max_output_size=max_output_size))
    except ArtifactError:
        raise
    except NBMFError as e:
        return DecodeOutcome(error=type(e).__name__, message=str(e))
    except _UNTYPED as e:
        log.error("the codec library raised an untyped %s for a client blob (a library bug; answered as "
                  "UndecodableBlob): %s", type(e).__name__, e)
        return DecodeOutcome(error="UndecodableBlob",
                             message=f"the blob cannot be decoded ({type(e).__name__}: {str(e)[:200]}); it is damaged")


def claimed_output(blob: bytes | dict) -> int:
    """Bytes a blob says it decodes to, read before decoding it: a blob's header length (which the codec
    enforces); a legacy blob's code bytes (the preview itself for semantic; for lossless the compressed size,
    a lower bound: ``legacy_limits`` bounds what it may inflate to). Raises NBMFError for a malformed blob."""
    if is_legacy(blob):
        return legacy.code_bytes(legacy.parse(blob)) or 0  # not hex text: it fails at decode
    return peek_header(blob).original_length


def legacy_limits(claims: Sequence[int], spare: int, max_output_size: int) -> list[int]:
    """``max_output_size`` for each legacy blob of a batch: its claim plus an even share of the batch budget
    that the claims leave (``spare``), capped at the per-blob limit, so the batch's total output stays within
    its budget. A blob that inflates past its share fails alone (OutputTooLargeError): decode it by itself.

    >>> legacy_limits([100, 50], spare=1000, max_output_size=580)
    [580, 550]
    """
    share = max(spare, 0) // max(len(claims), 1)
    return [min(claim + share, max_output_size) for claim in claims]


def input_size(item: tuple) -> int:
    """Raw bytes of an encode item's payload (what the codec compresses); PayloadError if it has none."""
    payload, kind, _ = item
    return len(to_raw(payload, kind)[0])


def encode_items(registry: Registry, version: str, items: Sequence[tuple]) -> list[tuple[bytes, str | None]]:
    """Encode ``(payload, kind, fidelity)`` items with ``version``: ``(blob, fallback_reason)`` each.

    One ``encode_many`` call per fidelity. The registry writes each record with the smallest verified body of
    the version's neural coder, its zstd fallback and the stub; it counts why the neural coder did not write a
    record, per version ("v1:larger"), and that reason is reported with each blob the stub or the fallback wrote
    ("mixed" when one call fell back for several reasons).
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
            header = peek_header(blob)
            fell_back = version != "stub" and (header.encoder_id == 0 or header.fallback)
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
