"""HTTP plumbing for the ingress: typed client errors, bounded body reading, content types, blob parsing.

Every client mistake becomes an ``ApiError`` with a 4xx status and a message that says what to send
instead; the ingress never answers 500 for bad input. JSON is strict both ways: no NaN or Infinity in a
request, none in a response (a payload that strict JSON cannot carry is a 422, never invalid JSON).
"""
import json
import math

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from nbmf.errors import NBMFError
from serve import codec_ops, schemas

JSON_TYPES = ("application/json",)
RAW_TYPE = "application/octet-stream"
# Status of each failure a blob or payload causes (the codec library's NBMFError names and the service's own);
# all of them are answered once: the ingress retries only infrastructure failures (then 503). docs/SERVE.md.
ERROR_STATUS = {"FormatError": 400,  # not a blob at all: a malformed request
                "CorruptBlobError": 422, "LegacySignatureError": 422,  # a well-formed blob that fails to decode
                "UndecodableBlob": 422,  # an untyped library error on a client blob (serve/codec_ops.py)
                "UnknownVersionError": 404, "OutputTooLargeError": 413,
                "PayloadError": 422, "UnrepresentablePayload": 422,  # a payload that JSON cannot carry exactly
                "DeadlineExceeded": 504}  # the codec ran past timeouts.codec_s
MAX_REPORTED_ERRORS = 10  # schema errors listed in a 422; a hostile body can have millions


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str, headers: dict | None = None):
        super().__init__(detail)
        self.status, self.error, self.detail, self.headers = status, error, detail, headers


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: text payloads may hold lone surrogates, which UTF-8 cannot carry."""

    def render(self, content) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def json_response(content, **kwargs) -> AsciiJSONResponse:
    """``content`` as strict JSON; a decoded payload that JSON cannot carry (NaN, Infinity) is the client's 422."""
    try:
        return AsciiJSONResponse(content, **kwargs)
    except (ValueError, RecursionError) as e:
        raise unrepresentable(e) from None


def unrepresentable(e: Exception) -> ApiError:
    return ApiError(422, "UnrepresentablePayload", f"the decoded payload cannot be sent as strict JSON ({e}); "
                                                   "read this blob with the nbmf library instead")


def strict_json_error(obj) -> Exception | None:
    """Why ``obj`` cannot be strict JSON, or None (checks one item of a batch response)."""
    try:
        json.dumps(obj, allow_nan=False)
    except (ValueError, RecursionError) as e:
        return e
    return None


def body_doc(json_model: type[BaseModel], raw_doc: str) -> dict:
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": json_model.model_json_schema(ref_template="#/components/schemas/{model}")},
        RAW_TYPE: {"schema": {"type": "string", "format": "binary", "description": raw_doc}}}}}


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over ``limit`` bytes without buffering it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "RequestTooLarge", f"request body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "RequestTooLarge", f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 would parse to inf, which no JSON response can carry back
        raise ValueError(f"number {text[:40]} is out of range for a double")
    return value


def parse_json(body: bytes | str):
    """Strict JSON: no NaN/Infinity, no number that overflows a double or an integer past Python's digit
    limit (4300), no nesting deeper than the parser's recursion limit (~1000 levels)."""
    try:
        return json.loads(body, parse_constant=_refuse_constant, parse_float=_finite_float)
    except (UnicodeDecodeError, ValueError) as e:
        raise ApiError(400, "MalformedJSON", f"request body is not valid JSON: {e}") from None
    except RecursionError:
        raise ApiError(400, "MalformedJSON", "request body nests too deep to parse; "
                                             "records nest at most a few hundred levels") from None


def check_count(data, key: str, limit: int) -> None:
    """413 for a batch of more than ``limit`` items, before the schema looks at any of them."""
    items = data.get(key) if isinstance(data, dict) else None
    if isinstance(items, list) and len(items) > limit:
        raise ApiError(413, "TooManyItems", f"{len(items)} {key}; the limit is {limit} per call: split the batch")


def validate(model: type[BaseModel], data):
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ApiError(422, "ValidationError", _describe(e)) from None


def _describe(e: ValidationError) -> str:
    errors = e.errors(include_url=False, include_input=False)
    text = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'body'}: {err['msg']}" for err in errors[:MAX_REPORTED_ERRORS])
    more = len(errors) - MAX_REPORTED_ERRORS
    return text + (f"; and {more} more errors" if more > 0 else "")


def client_error(name: str, message: str) -> ApiError:
    return ApiError(ERROR_STATUS.get(name, 400), name, message)


def blob_from_json(obj) -> bytes | dict:
    """An envelope (an object, or its JSON text) -> blob bytes; a legacy dict stays a dict; base64 text -> bytes.

    Base64 never holds '{', so a string that starts with one is JSON text (``nbmf.registry.as_blob`` reads it)."""
    if isinstance(obj, str) and not obj.lstrip().startswith("{"):
        try:
            return schemas.b64decode(obj, "blob")
        except ValueError as e:
            raise ApiError(400, "MalformedBlob", str(e)) from None
    if not isinstance(obj, (dict, str)):
        raise ApiError(400, "MalformedBlob", "a blob is a JSON envelope object, a legacy dict, or base64 text")
    try:
        return codec_ops.as_blob(obj.lstrip() if isinstance(obj, str) else obj)
    except NBMFError as e:
        raise client_error(type(e).__name__, str(e)) from None
    except (TypeError, ValueError, KeyError) as e:
        raise ApiError(400, "FormatError", f"not a valid blob envelope: {e}") from None


def raw_payload(body: bytes, kind: str):
    """A raw (octet-stream) request body -> the payload of ``kind``."""
    if kind == "bytes":
        return body
    try:
        text = body.decode("utf-8", "surrogatepass")  # the library's raw form of text (lone surrogates too)
    except UnicodeDecodeError as e:
        raise ApiError(400, "InvalidPayload", f"kind {kind!r} needs UTF-8 bytes: {e}") from None
    if kind == "text":
        return text
    try:
        return parse_json(text)
    except ApiError as e:
        raise ApiError(400, "InvalidPayload", f"kind 'json' needs a JSON document: {e.detail}") from None
