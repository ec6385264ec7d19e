"""The model deployment: neural codec versions, multiplexed by encoder version, batched per version.

A replica loads versions lazily through ``get_model(version)`` (``@serve.multiplexed``: an LRU of
``max_models_per_replica`` versions; the router prefers replicas that already hold a request's
version), so every registered version stays decodable without a replica per version.

Batching lives on its own methods (``_encode_batched`` / ``_decode_batched``) and never on the
multiplexed one (ray#56633). Each batched item carries its version explicitly and a batch is split
per version here, so correctness does not depend on how Serve groups requests. The codecs' batch
forms are bit-exact with their one-record forms, so batching never changes a blob's bytes.

Codec calls run on the replica's codec thread (serve/deadline.py) under ``timeouts.codec_s``, so the event
loop keeps answering pings and other requests. A decode past the deadline comes back as an outcome
(``DeadlineExceeded``, HTTP 504), like any other failure that the blob itself causes: the ingress retries
only exceptions (a replica that died, a version that did not load), never a blob that is slow or bad.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import defaultdict

from ray import serve

from serve.codec_ops import (
    VersionModel,
    blob_version,
    current_version,
    failed_outcomes,
    import_loader,
    list_versions,
    resolve_model_dir,
)
from serve.deadline import CodecThread, DeadlineExceeded
from serve.metrics import ServiceMetrics

log = logging.getLogger("ray.serve")

WARM_UP = [("warm-up record: numba compiles on first use", "text", "lossless"),
           ({"warm": ["up", 1]}, "json", "lossless")]


class ModelLoadError(RuntimeError):
    """A version could not be loaded on this replica (the ingress retries or falls back)."""


@serve.deployment(name="CodecModel", max_ongoing_requests=32)
class CodecModel:
    def __init__(self, model_dir: str, loader: str, max_models_per_replica: int = 4,
                 max_batch_size: int = 16, batch_wait_timeout_s: float = 0.002,
                 max_output_bytes: int = 16 << 20, threads: int = 1, codec_s: float = 1.5, device: str | None = None):
        # the codecs this replica loads split each batch over ``threads`` (nbmf.codecs.neural.default_threads):
        # sized to the CPUs the replica reserves, so replicas never oversubscribe the node
        os.environ["NBMF_THREADS"] = str(threads)
        if device:  # a replica that reserved a GPU runs its codecs' batches there (nbmf.codecs.neural.default_device)
            os.environ["NBMF_DEVICE"] = device
        self.model_dir = resolve_model_dir(model_dir)
        self.loader = import_loader(loader)
        self.max_output_bytes = max_output_bytes
        self.codec = CodecThread(codec_s, "nbmf-model")
        self.metrics = ServiceMetrics("model")
        self._encode_batched.set_max_batch_size(max_batch_size)
        self._encode_batched.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self._decode_batched.set_max_batch_size(max_batch_size)
        self._decode_batched.set_batch_wait_timeout_s(batch_wait_timeout_s)

        async def load(version: str) -> VersionModel:
            return await self._load(version)

        # Wired at init so the LRU size is a builder argument (Serve detects it on the instance).
        self.get_model = serve.multiplexed(max_num_models_per_replica=max_models_per_replica)(load)

    async def reconfigure(self, config: dict) -> None:
        """user_config ``{"preload": ["v2"]}``: load (and JIT-warm) these and the model dir's CURRENT
        before traffic.

        A version that fails to preload is logged, not fatal: requests for it retry the load, and
        encode falls back to the stub meanwhile.
        """
        versions = list(config.get("preload") or [])
        current = current_version(self.model_dir)
        for version in dict.fromkeys(versions + ([current] if current != "stub" else [])):
            try:
                await self.get_model(version)
            except Exception as e:  # noqa: BLE001 - logged; serving continues without it
                log.warning("preloading %s failed: %s", version, e)

    async def _load(self, version: str) -> VersionModel:
        if version not in list_versions(self.model_dir):
            raise ModelLoadError(f"{self.model_dir} holds no version {version!r}")
        t0 = time.perf_counter()
        try:
            model = await asyncio.to_thread(self._load_sync, version)
        except Exception as e:
            raise ModelLoadError(f"loading {version} from {self.model_dir} failed: {type(e).__name__}: {e}") from e
        log.info("loaded %s in %.0f ms", version, (time.perf_counter() - t0) * 1e3)
        return model

    def _load_sync(self, version: str) -> VersionModel:
        model = VersionModel(version, self.loader(str(self.model_dir), version))
        model.encode(WARM_UP)  # first calls compile kernels: pay them here, not in a request (the registry's path)
        warm_up = getattr(model.codec, "warm_up", None)  # and every neural kernel, decode's included (an injected
        if warm_up is not None:  # loader's codec may have none)
            warm_up()
        return model

    async def ping(self) -> str:
        return "ok"

    # -- batch endpoints: the ingress sends a whole list for one version (multiplexed_model_id) --
    async def encode_many(self, items: list[tuple]) -> list[tuple[bytes, str | None]]:
        model = await self.get_model(serve.get_multiplexed_model_id())
        return await self.codec.run(model.encode, items)  # DeadlineExceeded: the ingress falls back to the stub

    async def decode_many(self, blobs: list[bytes]) -> list:
        model = await self.get_model(serve.get_multiplexed_model_id())
        return await self._decode(model, blobs)

    async def _decode(self, model: VersionModel, blobs: list[bytes]) -> list:
        try:
            return await self.codec.run(model.decode, blobs, self.max_output_bytes)
        except DeadlineExceeded as e:
            return failed_outcomes(len(blobs), e)

    # -- one record per call, batched across concurrent requests --
    async def encode(self, version: str, item: tuple) -> tuple[bytes, str | None]:
        return _unwrap(await self._encode_batched((version, item)))

    async def decode(self, blob: bytes):
        return _unwrap(await self._decode_batched(blob))

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def _encode_batched(self, requests: list[tuple[str, tuple]]) -> list:
        groups = defaultdict(list)
        for i, (version, item) in enumerate(requests):
            groups[version].append((i, item))
        out: list = [None] * len(requests)
        for version, members in groups.items():
            t0 = time.perf_counter()
            try:
                model = await self.get_model(version)
                blobs = await self.codec.run(model.encode, [item for _, item in members])
            except Exception as e:  # noqa: BLE001 - handed to each caller of this group
                for i, _ in members:
                    out[i] = _Failed(e)
                self.metrics.request("encode", version, "error", (time.perf_counter() - t0) * 1e3, len(members))
                continue
            for (i, _), res in zip(members, blobs):
                out[i] = res
            self.metrics.request("encode", version, "ok", (time.perf_counter() - t0) * 1e3, len(members))
        return out

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def _decode_batched(self, blobs: list[bytes]) -> list:
        groups = defaultdict(list)
        for i, blob in enumerate(blobs):
            groups[blob_version(blob)].append(i)
        out: list = [None] * len(blobs)
        for version, members in groups.items():
            t0 = time.perf_counter()
            try:
                model = await self.get_model(version)
                results = await self._decode(model, [blobs[i] for i in members])
            except Exception as e:  # noqa: BLE001
                for i in members:
                    out[i] = _Failed(e)
                self.metrics.request("decode", version, "error", (time.perf_counter() - t0) * 1e3, len(members))
                continue
            for i, res in zip(members, results):
                out[i] = res
            outcome = "deadline" if any(r.error == "DeadlineExceeded" for r in results) else "ok"
            self.metrics.request("decode", version, outcome, (time.perf_counter() - t0) * 1e3, len(members))
        return out


class _Failed:
    """An exception travelling through ``@serve.batch`` results to the one caller it belongs to."""

    def __init__(self, error: Exception):
        self.error = error


def _unwrap(result):
    if isinstance(result, _Failed):
        raise result.error
    return result
