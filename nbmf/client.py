"""``Client(url)``: nbmf.compat's interface over the codec service's HTTP API (docs/SERVE.md), with a local fallback.

    from nbmf.client import get_client
    nbmf = get_client("http://codec:8000")            # one per process and URL; share it between threads
    blob = nbmf.encode({"role": "user", "content": "hi"}, fidelity="lossless")   # the envelope dict
    nbmf.decode(blob)                                  # {'role': 'user', 'content': 'hi'}
    nbmf.encode_batch(payloads), nbmf.decode_batch(blobs)

Requests go over one pooled ``httpx.Client`` (keep-alive connections, thread-safe). A 503 is retried with
exponential backoff. When the service cannot be reached (refused, timed out, or still 503 after the retries),
the client encodes locally, with the stub or with the model of ``model_path``, and decodes locally every blob
its local registry can read (stub and legacy blobs; with ``model_path``, that model's versions too); a blob it
cannot read raises the local registry's error. Both are counted in ``stats()``. After the service failed, calls
go straight to the local codec for ``reprobe_s`` seconds before the service is tried again.

Answers are what nbmf.compat gives: envelopes out, the payload (lossless) or canonical text (semantic) back. A
blob or payload the service refuses raises the library's own class (CorruptBlobError, FormatError, PayloadError,
...), any other refusal ``ServiceError``; neither is retried or answered locally.
"""
from __future__ import annotations

import base64
import json
import threading
import time
from collections import Counter
from typing import Any, Dict, List

from nbmf import errors
from nbmf.blob import LEGACY, Fidelity, Kind, is_legacy, to_envelope
from nbmf.compat import registry_for, service_payload
from nbmf.errors import NBMFError, ServiceError
from nbmf.extras import require
from nbmf.modeldir import check_domain
from nbmf.payload import check_json, infer_kind
from nbmf.registry import DecodeResult, Registry

__all__ = ["Client", "get_client"]

JSON = "application/json"
RAW = "application/octet-stream"


class _Unreachable(Exception):
    """The service did not answer (transport error, or 503 after every retry): the local codec stands in."""


class Client:
    def __init__(self, url: str, *, timeout: float = 5.0, retries: int = 3, backoff_s: float = 0.1,
                 max_connections: int = 16, batch_size: int = 256, reprobe_s: float = 5.0,
                 domain: str = "general", model_path: str | None = None, transport=None):
        """``timeout``: seconds per request (connect, read, write each); ``retries``: extra attempts after a 503,
        sleeping ``backoff_s``, then twice that, ...; ``max_connections``: the pool's size (connections kept alive);
        ``batch_size``: items per batch request (the service refuses more than its ``limits.max_batch_items``,
        256 by default); ``reprobe_s``: seconds the local codec answers alone after the service failed (0: try the
        service every call); ``domain``: the records' domain, sent with each item (the service encodes them with that
        domain's version) and used by the local codec; ``model_path``: the local codec, as nbmf.compat takes it
        (None: the stub); ``transport``: an httpx transport (tests)."""
        httpx = require("httpx")
        if retries < 0 or backoff_s < 0 or batch_size < 1 or reprobe_s < 0:
            raise ValueError("retries, backoff_s and reprobe_s are >= 0, batch_size >= 1")
        self.url, self.retries, self.backoff_s = url.rstrip("/"), int(retries), float(backoff_s)
        self.batch_size, self.reprobe_s, self.domain = int(batch_size), float(reprobe_s), check_domain(domain)
        self._http = httpx.Client(base_url=self.url, timeout=timeout, transport=transport,
                                  limits=httpx.Limits(max_connections=max_connections,
                                                      max_keepalive_connections=max_connections))
        self._transport_errors = (httpx.TransportError,)
        self._registry = registry_for(model_path) if model_path is not None else Registry(model_dir=None)
        self._lock = threading.Lock()  # the stats, the local codec (a model is not shared between threads)
        self._stats: Counter = Counter()
        self._down_until = 0.0

    # -- the interface ------------------------------------------------------------------------------
    def encode(self, payload: Any, fidelity: str = "semantic") -> Dict[str, Any]:
        return self.encode_batch([payload], fidelity)[0]

    def decode(self, blob) -> Any:
        return self.decode_batch([blob])[0]

    def encode_batch(self, payloads: List[Any], fidelity: str = "semantic") -> List[Dict[str, Any]]:
        """The envelope of each payload, in order (one request per ``batch_size`` payloads)."""
        fidelity = Fidelity.of(fidelity).label
        items = [_encode_item(p, fidelity, self.domain) for p in payloads]
        out: list = []
        for i in range(0, len(items), self.batch_size):
            part = payloads[i:i + self.batch_size]
            try:
                res = self._post("/v1/encode_batch", {"items": items[i:i + self.batch_size]})
                out += [r["blob"] for r in res["results"]]
                self._count("remote_encodes", len(part))
            except _Unreachable:
                out += self._local_encode(part, fidelity)
        return out

    def decode_batch(self, blobs: List[Any]) -> List[Any]:
        """The payload (lossless) or canonical text (semantic) of each blob: envelopes, legacy dicts, their JSON
        text, binary blobs. The first blob that fails raises its error (with its index in the batch)."""
        out: list = []
        for i in range(0, len(blobs), self.batch_size):
            part = blobs[i:i + self.batch_size]
            try:
                res = self._post("/v1/decode_batch", {"blobs": [_wire_blob(b) for b in part]})
            except _Unreachable:
                out += self._local_decode(part)
                continue
            for j, r in enumerate(res["results"]):
                if "error" in r and "payload" not in r:
                    raise _refusal(r["status"], r["error"], f"blob {i + j} of the batch: {r['detail']}")
                out.append(_answer(r))
            self._count("remote_decodes", len(part))
        return out

    def stats(self) -> dict:
        """Counts: remote_encodes, remote_decodes, local_encodes, local_decodes (the service stood in for),
        retries (503s retried), unreachable (calls that found the service down)."""
        with self._lock:
            return dict(self._stats)

    def close(self) -> None:
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- plumbing -----------------------------------------------------------------------------------
    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._stats[key] += n

    def _post(self, path: str, body) -> dict:
        """The JSON answer of a 200; _Unreachable when the service does not answer; its refusals raised."""
        if time.monotonic() < self._down_until:
            self._count("unreachable")
            raise _Unreachable
        content = json.dumps(body, allow_nan=False).encode("ascii")  # lone surrogates travel escaped
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                r = self._http.post(path, content=content, headers={"content-type": JSON})
            except self._transport_errors:
                break
            if r.status_code == 200:
                return r.json()
            if r.status_code != 503:
                err = _error_body(r)
                raise _refusal(r.status_code, err.get("error", "HTTPError"), err.get("detail", r.text[:300]))
            if attempt < self.retries:
                self._count("retries")
                time.sleep(delay)
                delay *= 2
        self._down_until = time.monotonic() + self.reprobe_s
        self._count("unreachable")
        raise _Unreachable

    def _local_encode(self, payloads, fidelity: str) -> list[dict]:
        with self._lock:
            blobs = self._registry.encode_many(payloads, fidelity=fidelity, domain=self.domain)
            self._stats["local_encodes"] += len(payloads)
        return [to_envelope(b) for b in blobs]

    def _local_decode(self, blobs) -> list:
        with self._lock:
            results = self._registry.decode_many(list(blobs))
            self._stats["local_decodes"] += len(blobs)
        return [service_payload(r) for r in results]


def _encode_item(payload, fidelity: str, domain: str) -> dict:
    """An EncodeItem of the service (serve/schemas.py); a payload the codec would refuse raises here, as locally."""
    kind = infer_kind(payload)
    if kind == Kind.BYTES:
        payload = base64.b64encode(bytes(payload)).decode("ascii")
    elif kind == Kind.JSON:
        check_json(payload)
    return {"payload": payload, "fidelity": fidelity, "kind": kind.label, "domain": domain}


def _wire_blob(blob):
    """A blob as a decode_batch item: an envelope or legacy dict, or JSON text, as it is; binary as base64."""
    if isinstance(blob, dict):
        return blob
    if isinstance(blob, (bytes, bytearray, memoryview)):
        if is_legacy(blob):
            return bytes(blob).decode("utf-8", "surrogatepass")
        return base64.b64encode(bytes(blob)).decode("ascii")
    if isinstance(blob, str) and is_legacy(blob.lstrip()):
        return blob
    raise TypeError(f"a blob is a dict, its JSON text, or bytes, not {type(blob).__name__}")


def _answer(r: dict):
    """A DecodeResponse as nbmf.compat answers it."""
    kind = Kind.of(r["kind"])
    payload = base64.b64decode(r["payload"]) if kind == Kind.BYTES else r["payload"]
    return service_payload(DecodeResult(payload, kind, Fidelity.of(r["fidelity"]), r["version"],
                                        r.get("truncated", False), r["version"] == LEGACY))


def _error_body(r) -> dict:
    try:
        body = r.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _refusal(status: int, name: str, detail: str) -> NBMFError:
    """The library's own class for a refusal it names (CorruptBlobError, ...), else ServiceError."""
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, NBMFError) and cls is not ServiceError:
        return cls(detail)
    return ServiceError(status, name, detail)


_clients: dict[str, Client] = {}
_clients_lock = threading.Lock()


def get_client(url: str, **kwargs) -> Client:
    """The process's Client for ``url``, created on first use with ``kwargs`` (later calls ignore them)."""
    with _clients_lock:
        if url not in _clients:
            _clients[url] = Client(url, **kwargs)
        return _clients[url]
