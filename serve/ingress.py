"""The HTTP ingress: FastAPI routes, canary routing, stub fallback, decode routing by blob version.

Only the stub (and legacy blobs) run here; neural versions run in the model deployment, reached
through ``handle.options(multiplexed_model_id=version)``. Client errors are answered here with a 4xx
before anything is routed: size limits and batch budgets (413), content type (415), schema (422),
checksum and envelope (400), versions the registry does not hold (404). Stub and legacy coding runs on
the replica's codec thread under ``timeouts.codec_s`` (serve/deadline.py), never on the event loop.

(No ``from __future__ import annotations`` here: FastAPI must see real annotations on the methods
that ``serve.ingress`` rewraps.)
"""

import asyncio
import logging
import time

from fastapi import FastAPI, Request
from fastapi.responses import Response
from ray import serve

from nbmf.errors import NBMFError
from serve import codec_ops, schemas
from serve.args import DomainRoute, Limits, Timeouts, check_domains, check_version
from serve.canary import CanaryRouter, Routing
from serve.deadline import CodecThread, DeadlineExceeded
from serve.http import (
    ERROR_STATUS,
    JSON_TYPES,
    RAW_TYPE,
    ApiError,
    AsciiJSONResponse,
    blob_from_json,
    body_doc,
    check_count,
    client_error,
    json_response,
    media_type,
    parse_json,
    raw_payload,
    read_body,
    strict_json_error,
    unrepresentable,
    validate,
)
from serve.metrics import ServiceMetrics

log = logging.getLogger("ray.serve")

VERSIONS_TTL_S = 2.0  # re-list the model dir at most this often (and on a miss)


app = FastAPI(
    title="NBMF codec service",
    version="1",
    description="Encode and decode agent memory records with the NBMF codecs. Blobs travel as JSON "
                "envelopes (base64 body) or as raw bytes (application/octet-stream).",
    default_response_class=AsciiJSONResponse,
)


@app.exception_handler(ApiError)
async def _api_error(_: Request, exc: ApiError):
    return AsciiJSONResponse({"error": exc.error, "detail": exc.detail}, status_code=exc.status, headers=exc.headers)


def fallback_reason(e: BaseException | None) -> str:
    if isinstance(e, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    from ray import exceptions as rex

    from serve.model import ModelLoadError

    if isinstance(e, ModelLoadError) or getattr(e, "cause", None).__class__ is ModelLoadError:
        return "load"
    unavailable = tuple(getattr(rex, n) for n in ("RayActorError", "ActorDiedError", "ActorUnavailableError")
                        if hasattr(rex, n))
    from ray.serve import exceptions as sex

    unavailable += tuple(getattr(sex, n) for n in ("BackPressureError", "DeploymentUnavailableError") if hasattr(sex, n))
    return "unavailable" if isinstance(e, unavailable) else "error"


async def _await(response):
    return await response


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3


def payload_call(fn, item: tuple):
    """``fn(item)`` on an encode item, a payload the codec refuses raised as the client's 4xx (422)."""
    try:
        return fn(item)
    except NBMFError as e:
        raise client_error(type(e).__name__, str(e)) from None
    except (TypeError, ValueError, RecursionError) as e:
        raise ApiError(422, "InvalidPayload", f"payload cannot be encoded as {item[1]}: {e}") from None


def _item_error(status: int, error: str, detail: str) -> dict:
    return schemas.ItemError(status=status, error=error, detail=detail).model_dump()


def _deadline_error(e: DeadlineExceeded) -> ApiError:
    return ApiError(504, "DeadlineExceeded", f"{e}; the request was not retried. Retry later with a smaller "
                                             "request, or read the blob with the nbmf library")


# Everything the class uses is defined above it: ``serve.ingress`` snapshots the routes (cloudpickle,
# by value) while the class statement runs, capturing only names that already exist.
@serve.deployment(name="Ingress", max_ongoing_requests=256)
@serve.ingress(app)
class Ingress:
    def __init__(self, model_handle, model_dir: str | None, limits: dict, timeouts: dict):
        self.model = model_handle
        self.model_dir = codec_ops.resolve_model_dir(model_dir)
        self.limits = Limits.model_validate(limits)
        self.timeouts = Timeouts.model_validate(timeouts)
        self.stub = codec_ops.stub_registry()
        self.codec = CodecThread(self.timeouts.codec_s, "nbmf-ingress")
        self.metrics = ServiceMetrics("ingress")
        self.router = Routing(CanaryRouter(current="stub"))
        self._versions: list[str] = []
        self._versions_at = 0.0

    def reconfigure(self, config: dict) -> None:
        """user_config ``{current, candidate, canary_share, domains}``: a rollout step without a restart.

        ``domains``: ``{domain: {current, candidate, canary_share}}``. A domain of the model dir's DOMAINS.json
        routes to its version there unless ``domains`` sets its ``current``; every other domain routes as the
        default (``current``, ``candidate``, ``canary_share``)."""
        versions = self.versions(refresh=True)
        current = check_version(config.get("current")) or codec_ops.current_version(self.model_dir)
        candidate = check_version(config.get("candidate"))
        own = codec_ops.domain_versions(self.model_dir)
        routes = {d: DomainRoute.model_validate(r) for d, r in check_domains(config.get("domains") or {}).items()}
        routers = {}
        for domain in sorted(set(own) | set(routes)):
            route = routes.get(domain, DomainRoute())
            routers[domain] = CanaryRouter(current=route.current or own.get(domain) or current,
                                           candidate=route.candidate, share=route.canary_share)
        routing = Routing(CanaryRouter(current=current, candidate=candidate,
                                       share=float(config.get("canary_share", 0.0))), routers)
        for name in routing.versions():
            if name != "stub" and name not in versions:
                raise ValueError(f"version {name!r} is not in {self.model_dir} (it holds {', '.join(versions) or 'none'})")
        self.router = routing
        log.info("routing: %s", self.router)

    def versions(self, refresh: bool = False) -> list[str]:
        if refresh or time.monotonic() - self._versions_at > VERSIONS_TTL_S:
            self._versions = codec_ops.list_versions(self.model_dir)
            self._versions_at = time.monotonic()
        return self._versions

    def held(self, version: str) -> bool:
        return version == "stub" or version in self.versions() or version in self.versions(refresh=True)

    # ---------------------------------------------------------------- encode
    async def encode_one(self, item: tuple, record_id: str | None,
                         domain: str | None = None) -> tuple[bytes, str, str | None]:
        """-> (blob, routed version, fallback reason). Never fails for a neural-side problem."""
        version = self.router.choose(record_id, domain)
        t0 = time.perf_counter()
        if version == "stub":
            (blob,) = await self.stub_encode_many([item])
            self.metrics.request("encode", "stub", "ok", _ms(t0))
            return blob, version, None
        # a payload the codec refuses is the client's 422 here, before it can fail a model batch that it shares
        # with other requests (they would all fall back to the stub)
        await self.input_bytes([item])
        try:
            blob, reason = await self.call_model(self.model.options(multiplexed_model_id=version).encode
                                                 .remote(version, item), self.timeouts.encode_s)
        except Exception as e:  # noqa: BLE001 - any model-side failure: the stub writes the record
            reason = fallback_reason(e)
            log.warning("encode with %s failed (%s: %s); stub fallback", version, reason, e)
            (blob,) = await self.stub_encode_many([item])
        if reason is not None:
            self.metrics.fallback(version, reason)
        self.metrics.request("encode", version, "fallback" if reason else "ok", _ms(t0))
        return blob, version, reason

    async def stub_encode_many(self, items: list[tuple]) -> list[bytes]:
        """Stub blobs of ``items``, written on the codec thread; a payload the codec refuses is a 4xx."""
        try:
            return await self.codec.run(lambda: [payload_call(self._stub_encode, it) for it in items])
        except DeadlineExceeded as e:
            raise _deadline_error(e) from None

    def _stub_encode(self, item: tuple) -> bytes:
        payload, kind, fidelity = item
        return self.stub.encode(payload, fidelity=fidelity, version="stub", kind=kind)

    async def input_bytes(self, items: list[tuple]) -> int:
        """Raw payload bytes of encode items (on the codec thread); a payload the codec refuses is a 4xx."""
        try:
            return sum(await self.codec.run(lambda: [payload_call(codec_ops.input_size, it) for it in items]))
        except DeadlineExceeded as e:
            raise _deadline_error(e) from None

    async def check_input_budget(self, items: list[tuple]) -> None:
        """413 when an encode batch's payloads add up to more than ``limits.max_batch_input_bytes``."""
        total = await self.input_bytes(items)
        if total > self.limits.max_batch_input_bytes:
            raise ApiError(413, "BatchTooLarge", f"the payloads of this batch add up to {total} bytes; the limit is "
                                                 f"{self.limits.max_batch_input_bytes} per call: split the batch")

    async def call_model(self, response, timeout_s: float):
        try:
            return await asyncio.wait_for(_await(response), timeout_s)
        except asyncio.TimeoutError:
            response.cancel()
            raise

    @app.post("/v1/encode", summary="Encode one record",
              openapi_extra=body_doc(schemas.EncodeRequest,
                                     "raw payload bytes; query: kind, fidelity, record_id, domain, format"),
              responses={200: {"description": "JSON envelope, or the blob as application/octet-stream (format=raw)"}})
    async def encode(self, request: Request, kind: schemas.Kind | None = None, fidelity: schemas.Fidelity = "lossless",
                     record_id: str | None = None, format: schemas.BlobFormat | None = None, domain: str | None = None):
        body = await read_body(request, self.limits.max_request_bytes)
        mtype = media_type(request)
        if mtype in JSON_TYPES:
            req = validate(schemas.EncodeRequest, parse_json(body))
            item, record_id, out_format, domain = req.to_item(), req.record_id, req.format, req.domain
        elif mtype == RAW_TYPE:
            if domain is not None:
                try:
                    schemas.check_domain(domain)
                except ValueError as e:
                    raise ApiError(422, "InvalidDomain", f"query parameter domain: {e}") from None
            item, out_format = (raw_payload(body, kind or "bytes"), kind or "bytes", fidelity), format or "raw"
        else:
            raise ApiError(415, "UnsupportedMediaType",
                           f"send Content-Type {JSON_TYPES[0]} (an EncodeRequest) or {RAW_TYPE} (raw payload bytes); got {mtype or 'none'}")
        blob, version, reason = await self.encode_one(item, record_id, domain)
        headers = {"x-nbmf-version": version, "x-nbmf-encoder": codec_ops.blob_version(blob)}
        if reason:
            headers["x-nbmf-fallback"] = reason
        if out_format == "raw":
            return Response(content=blob, media_type=RAW_TYPE, headers=headers)
        return AsciiJSONResponse(codec_ops.to_envelope(blob), headers=headers)

    @app.post("/v1/encode_batch", summary="Encode many records", response_model=schemas.EncodeBatchResponse)
    async def encode_batch(self, request: Request):
        data = parse_json(await self.json_body(request))
        check_count(data, "items", self.limits.max_batch_items)
        req = validate(schemas.EncodeBatchRequest, data)
        t0 = time.perf_counter()
        routed = [self.router.choose(it.record_id, it.domain) for it in req.items]
        items = [it.to_item() for it in req.items]
        await self.check_input_budget(items)
        blobs: list = [None] * len(items)
        reasons: list = [None] * len(items)
        groups: dict[str, list[int]] = {}
        for i, v in enumerate(routed):
            groups.setdefault(v, []).append(i)
        for version, idx in groups.items():
            if version != "stub":
                try:
                    res = await self.call_model(self.model.options(multiplexed_model_id=version).encode_many
                                                .remote([items[i] for i in idx]), self.timeouts.encode_s)
                    for i, (blob, reason) in zip(idx, res):
                        blobs[i], reasons[i] = blob, reason
                    continue
                except Exception as e:  # noqa: BLE001
                    reason = fallback_reason(e)
                    log.warning("batch encode with %s failed (%s: %s); stub fallback", version, reason, e)
                    for i in idx:
                        reasons[i] = reason
            for i, blob in zip(idx, await self.stub_encode_many([items[i] for i in idx])):
                blobs[i] = blob
        for version, idx in groups.items():
            fb = [reasons[i] for i in idx if reasons[i]]
            for reason in set(fb):
                self.metrics.fallback(version, reason, fb.count(reason))
            self.metrics.request("encode", version, "fallback" if fb else "ok", _ms(t0), len(idx))
        return schemas.EncodeBatchResponse(results=[
            schemas.EncodeResult(blob=codec_ops.to_envelope(b), version=v, encoder=codec_ops.blob_version(b), fallback=r)
            for b, v, r in zip(blobs, routed, reasons)])

    # ---------------------------------------------------------------- decode
    def route(self, blob: bytes | dict) -> str:
        """The blob's version after every check the ingress can make; a client error raises here."""
        try:
            version = codec_ops.blob_version(blob)
            if version == "legacy":
                return version
            header = codec_ops.check_blob(blob)  # stub blobs too: the size guard answers before any inflating
        except NBMFError as e:
            raise client_error(type(e).__name__, str(e)) from None
        if header.original_length > self.limits.max_output_bytes:
            raise ApiError(413, "OutputTooLargeError", f"blob decodes to {header.original_length} bytes; "
                                                       f"this service returns at most {self.limits.max_output_bytes}")
        if not self.held(version):
            held = ", ".join(["stub", *self.versions()])
            raise ApiError(404, "UnknownVersionError",
                           f"blob was written by encoder {version}; this service holds {held}. "
                           f"Deploy that version's model directory to decode it.")
        return version

    async def decode_one(self, blob: bytes | dict) -> codec_ops.DecodeOutcome:
        version = self.route(blob)
        t0 = time.perf_counter()
        if version in ("legacy", "stub"):
            (outcome,) = await self.stub_decode(codec_ops.decode_items, [blob], self.limits.max_output_bytes)
        else:
            outcome = await self.decode_neural(version, lambda: self.model.options(
                multiplexed_model_id=version).decode.remote(blob))
        self.metrics.request("decode", version, "error" if outcome.error else "ok", _ms(t0))
        return outcome

    async def stub_decode(self, decode, blobs: list, limit) -> list[codec_ops.DecodeOutcome]:
        """``decode(self.stub, blobs, limit)`` on the codec thread; past the deadline each blob's outcome is 504."""
        try:
            return await self.codec.run(decode, self.stub, blobs, limit)
        except DeadlineExceeded as e:
            return codec_ops.failed_outcomes(len(blobs), e)

    async def decode_neural(self, version: str, call):
        """Retry with backoff, then 503: a neural blob is never decoded by anything but its own model.

        Only exceptions are retried (the replica died or timed out, the version did not load); what the blob
        itself causes (damage, a deadline passed decoding it) comes back as an outcome and is answered once."""
        delay, last = self.timeouts.retry_backoff_s, None
        for attempt in range(self.timeouts.decode_attempts):
            try:
                return await self.call_model(call(), self.timeouts.decode_s)
            except Exception as e:  # noqa: BLE001 - infrastructure failure: retry
                last = e
                log.warning("decode with %s, attempt %d failed: %s: %s", version, attempt + 1, type(e).__name__, e)
                if attempt + 1 < self.timeouts.decode_attempts:
                    await asyncio.sleep(delay)
                    delay *= 2
        self.metrics.request("decode", version, "unavailable", 0.0)
        raise ApiError(503, "ModelUnavailable",
                       f"the {version} model could not decode this blob after {self.timeouts.decode_attempts} attempts "
                       f"({fallback_reason(last)}: {type(last).__name__}); retry later. Neural blobs never fall back.",
                       headers={"Retry-After": "1"})

    @app.post("/v1/decode", summary="Decode one blob", response_model=schemas.DecodeResponse,
              openapi_extra=body_doc(schemas.Envelope, "a binary blob, or the JSON bytes of an envelope or a legacy blob"))
    async def decode(self, request: Request):
        body = await read_body(request, self.limits.max_request_bytes)
        mtype = media_type(request)
        if mtype in JSON_TYPES:
            blob = blob_from_json(parse_json(body))
        elif mtype == RAW_TYPE:
            if not body:
                raise ApiError(400, "CorruptBlobError", "empty body: a blob has at least a header")
            # JSON bytes (an envelope, or a legacy blob) are read as the JSON content type reads them
            blob = blob_from_json(parse_json(body)) if codec_ops.is_legacy(body.lstrip()) else body
        else:
            raise ApiError(415, "UnsupportedMediaType",
                           f"send Content-Type {JSON_TYPES[0]} (envelope or legacy dict) or {RAW_TYPE} (binary blob); got {mtype or 'none'}")
        outcome = await self.decode_one(blob)
        if outcome.error:
            raise client_error(outcome.error, outcome.message)
        return json_response(schemas.decode_response(outcome).model_dump())

    @app.post("/v1/decode_batch", summary="Decode many blobs (errors per item)", response_model=schemas.DecodeBatchResponse)
    async def decode_batch(self, request: Request):
        data = parse_json(await self.json_body(request))
        check_count(data, "blobs", self.limits.max_batch_items)
        req = validate(schemas.DecodeBatchRequest, data)
        results: list = [None] * len(req.blobs)
        groups: dict[str, list[int]] = {}
        blobs: list = [None] * len(req.blobs)
        claims: list = [0] * len(req.blobs)
        for i, obj in enumerate(req.blobs):
            try:
                blobs[i] = blob_from_json(obj)
                version = self.route(blobs[i])
                claims[i] = self.claim(blobs[i])
            except ApiError as e:
                results[i] = _item_error(e.status, e.error, e.detail)
                continue
            groups.setdefault(version, []).append(i)
        # the budget is checked before any decoding: it bounds what this request makes the ingress hold and send
        claimed, budget = sum(claims), self.limits.max_batch_output_bytes
        if claimed > budget:
            raise ApiError(413, "BatchTooLarge", f"the blobs of this batch claim {claimed} bytes of output; the limit "
                                                 f"is {budget} per call: split the batch")
        for version, idx in groups.items():
            t0 = time.perf_counter()
            chunk = [blobs[i] for i in idx]
            if version == "legacy":  # a lossless legacy blob claims only its compressed size: bound each one
                limits = codec_ops.legacy_limits([claims[i] for i in idx], budget - claimed, self.limits.max_output_bytes)
                outcomes = await self.stub_decode(codec_ops.decode_each, chunk, limits)
            elif version == "stub":
                outcomes = await self.stub_decode(codec_ops.decode_items, chunk, self.limits.max_output_bytes)
            else:
                outcomes = await self.decode_neural(version, lambda v=version, c=chunk: self.model.options(
                    multiplexed_model_id=v).decode_many.remote(c))
            for i, out in zip(idx, outcomes):
                message = out.message
                if version == "legacy" and out.error == "OutputTooLargeError":
                    message += (f" (in a batch, a legacy blob may inflate to its share of the batch's "
                                f"{budget} bytes: decode it alone with /v1/decode)")
                results[i] = (_item_error(ERROR_STATUS.get(out.error, 400), out.error, message) if out.error
                              else schemas.decode_response(out).model_dump())
            self.metrics.request("decode", version, "error" if any(o.error for o in outcomes) else "ok", _ms(t0), len(idx))
        try:
            return AsciiJSONResponse({"results": results})
        except (ValueError, RecursionError):  # some payload strict JSON cannot carry: that item's 422, not the batch's
            for i, item in enumerate(results):
                if (e := strict_json_error(item)) is not None:
                    err = unrepresentable(e)
                    results[i] = _item_error(err.status, err.error, err.detail)
            return json_response({"results": results})

    def claim(self, blob: bytes | dict) -> int:
        """What a routed blob claims to decode to (codec_ops.claimed_output); a malformed blob is the client's."""
        try:
            return codec_ops.claimed_output(blob)
        except NBMFError as e:
            raise client_error(type(e).__name__, str(e)) from None
        except (ValueError, RecursionError) as e:  # untyped refusal of a hostile legacy blob (see codec_ops)
            raise ApiError(400, "UndecodableBlob", f"the blob cannot be read: {type(e).__name__}: {str(e)[:200]}") from None

    async def json_body(self, request: Request) -> bytes:
        body = await read_body(request, self.limits.max_request_bytes)
        if media_type(request) not in JSON_TYPES:
            raise ApiError(415, "UnsupportedMediaType", f"batch endpoints take {JSON_TYPES[0]}; got {media_type(request) or 'none'}")
        return body

    # ---------------------------------------------------------------- info
    @app.get("/v1/versions", summary="Encoder versions this service decodes, and the encode routing",
             response_model=schemas.VersionsResponse)
    async def list_versions(self):
        infos = [{"name": "stub", "encoder_id": 0}]
        infos += [codec_ops.manifest_summary(self.model_dir, v) for v in self.versions(refresh=True)]
        return schemas.VersionsResponse(**self.router.default.describe(), versions=infos,
                                        domains={d: r.describe() for d, r in self.router.domains.items()})

    @app.get("/healthz", summary="Liveness; 'degraded' when the model deployment does not answer (encode falls back)")
    async def healthz(self):
        model = "ok"
        if any(v != "stub" for v in self.router.versions()):
            try:
                await self.call_model(self.model.ping.remote(), 1.0)
            except Exception as e:  # noqa: BLE001
                model = f"unavailable: {type(e).__name__}"
        return {"status": "ok" if model == "ok" else "degraded", "model": model,
                **self.router.default.describe(),
                "domains": {d: r.describe() for d, r in self.router.domains.items()}}

    @app.get("/v1/stats", summary="Counters of the ingress replica that answers (Prometheus has all replicas)")
    async def stats(self):
        return {"replica": serve.get_replica_context().replica_id.unique_id, **self.metrics.snapshot()}
