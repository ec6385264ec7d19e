"""The memory service's encoder interface, over NBMF: switching is one import line per module.

    from memory_service.nbmf_encoder import encode              ->  from nbmf.compat import encode
    from memory_service.nbmf_decoder import decode              ->  from nbmf.compat import decode
    from memory_service.nbmf_encoder_production import (...)    ->  from nbmf.compat import (...)

Same names, signatures and defaults (``fidelity="semantic"``, ``domain="general"``, ``model_path=None``).
``encode`` returns the blob's envelope (``nbmf.to_envelope``): a dict of strict JSON that the service stores in
its JSON files as it stored the stub's dicts. ``decode`` takes any dict the service ever stored: an envelope,
an old stub blob, a "production" placeholder blob (an old stub blob with ``meta.encoder_version`` and
``meta.encoder_domain``), and also a binary blob or any of them as JSON text.

What ``decode`` gives back is what the service's modes promised:

- lossless: the exact payload (text as str, JSON values as themselves, bytes as bytes);
- semantic: the canonical text (``nbmf.payload.canonical``): a str for text *and* JSON, as the service's
  semantic mode returned (text: NFC, whitespace runs collapsed; JSON: compact JSON with sorted keys), whole,
  never a preview. Old stub blobs give back what they hold: their 2048-character preview.

>>> blob = encode("  Remember:   metric units. ", fidelity="semantic")
>>> sorted(blob)
['body', 'crc32', 'encoder', 'fallback', 'fidelity', 'format', 'kind', 'length']
>>> decode(blob)
'Remember: metric units.'
>>> decode(encode({"b": 1, "a": [True, None]}))                # semantic, the service's default
'{"a":[true,null],"b":1}'
>>> decode(encode({"b": 1, "a": [True, None]}, "lossless"))
{'b': 1, 'a': [True, None]}
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Dict, Literal

from nbmf import modeldir
from nbmf.blob import Fidelity as _Fidelity
from nbmf.blob import Kind, to_envelope
from nbmf.errors import ArtifactError
from nbmf.payload import canonical, to_raw
from nbmf.registry import DecodeResult, Registry, default_registry

Fidelity = Literal["lossless", "semantic"]  # the service's spelling (memory_service.nbmf_encoder.Fidelity)

__all__ = ["Fidelity", "ProductionNBMFEncoder", "decode", "decode_production", "encode", "encode_production",
           "get_production_encoder", "registry_for", "service_payload"]


def service_payload(res: DecodeResult):
    """What the service's decode returned for a decoded blob: the payload, or for semantic fidelity the canonical
    text (a str, also for a JSON value; bytes stay bytes)."""
    if res.fidelity == _Fidelity.SEMANTIC and res.kind == Kind.JSON:
        return canonical(to_raw(res.payload, Kind.JSON)[0], Kind.JSON).decode("utf-8", "surrogatepass")
    return res.payload


_registries: dict[Path, Registry] = {}
_lock = threading.Lock()


def registry_for(model_path: str | Path | None) -> Registry:
    """The registry that encodes and decodes for ``model_path``, one per path and process (models load once).

    None: the default registry (``$NBMF_MODEL_DIR``, the checkout's ``models/``, or the packaged release). A model
    directory (``vN/`` artifacts and ``CURRENT``): its current version. An artifact directory (a ``manifest.json``):
    that version; when it is a model directory's ``vN/``, the other versions there decode too. Anything else is
    ArtifactError (the stub-era placeholder's JSON file included).
    """
    if model_path is None:
        return default_registry()
    path = Path(model_path).resolve()
    with _lock:
        if path not in _registries:
            _registries[path] = _load(path)
        return _registries[path]


def _load(path: Path) -> Registry:
    if (path / modeldir.MANIFEST).is_file():
        if path.name in modeldir.versions(path.parent):  # a vN/ inside a model directory
            return Registry(path.parent, current=path.name)
        from nbmf.codecs.neural import load_codec  # an exported artifact anywhere else

        reg = Registry(model_dir=None)
        reg.register(load_codec(path), make_current=True)
        return reg
    if path.is_dir() and (modeldir.versions(path) or (path / modeldir.CURRENT).is_file()):
        return Registry(path)
    what = "is a file" if path.is_file() else "does not exist" if not path.exists() else "holds no model"
    raise ArtifactError(f"model_path {path} {what}: pass a model artifact directory (with {modeldir.MANIFEST}), a "
                        f"model directory (vN/ artifacts and a {modeldir.CURRENT} file), or None for the default model")


def _check_domain(domain: str) -> str:
    if not isinstance(domain, str) or not domain:
        raise TypeError(f"domain is a non-empty str such as 'general', not {domain!r}")
    return modeldir.check_domain(domain)


class ProductionNBMFEncoder:
    """The service's production encoder: ``domain``'s version (its own, set with `nbmf current --domain`, else the
    current one), from ``model_path`` if given (a model directory's DOMAINS.json; one artifact: that version).

    Encoders of one ``model_path`` share its registry (``registry_for``), so a model loads once per process.
    """

    def __init__(self, domain: str = "general", model_path: str | None = None):
        self.domain = _check_domain(domain)
        self.model_path = model_path
        self.registry = registry_for(model_path)
        self.version = self.registry.version_for(domain)
        self.model_loaded = self.version != modeldir.STUB  # as the placeholder said

    def encode(self, payload: Any, fidelity: Fidelity = "semantic") -> Dict[str, Any]:
        """The envelope of ``payload``: lossless stores it exactly; semantic stores its canonical form."""
        # by domain, not version=: a version that cannot load falls back to the classical codecs (counted), never fails
        return to_envelope(self.registry.encode(payload, fidelity=fidelity, domain=self.domain))

    def decode(self, blob: Dict[str, Any]) -> Any:
        """The payload (lossless) or canonical text (semantic) of any blob the service stored."""
        return service_payload(self.registry.decode_result(blob))


_encoders: dict[tuple[str, str | None], ProductionNBMFEncoder] = {}
_latest: list[ProductionNBMFEncoder] = []  # the encoder get_production_encoder gave last: decode_production's


def get_production_encoder(domain: str = "general", model_path: str | None = None) -> ProductionNBMFEncoder:
    """The process's encoder for (``domain``, ``model_path``), created on first use."""
    key = (domain, None if model_path is None else str(Path(model_path).resolve()))
    enc = _encoders.get(key)
    if enc is None:
        enc = ProductionNBMFEncoder(domain=domain, model_path=model_path)
        with _lock:
            enc = _encoders.setdefault(key, enc)
    _latest[:] = [enc]
    return enc


def encode_production(payload: Any, fidelity: Fidelity = "semantic", domain: str = "general",
                      model_path: str | None = None) -> Dict[str, Any]:
    return get_production_encoder(domain, model_path).encode(payload, fidelity)


def decode_production(blob: Dict[str, Any]) -> Any:
    """Any stored blob, read with the models of the encoder ``get_production_encoder`` gave last (as the service's
    did: so blobs written with a ``model_path`` read back), else the default's. The blob names its version."""
    return (_latest[0] if _latest else get_production_encoder()).decode(blob)


def encode(payload: Any, fidelity: Fidelity = "semantic") -> Dict[str, Any]:
    """``memory_service.nbmf_encoder.encode``: the envelope dict of ``payload``, written by the current version."""
    return get_production_encoder().encode(payload, fidelity)


def decode(blob: Dict[str, Any]) -> Any:
    """``memory_service.nbmf_decoder.decode``: the payload (lossless) or canonical text (semantic) of a stored blob."""
    return get_production_encoder().decode(blob)
