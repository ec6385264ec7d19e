"""HTTP plumbing for the ingress: typed client errors, bounded body reading, content types, blob parsing.

Every client mistake becomes an ``ApiError`` with a 4xx status and a message that says what to send
instead; the ingress never answers 500 for bad input.
"""
import json

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from nbmf.errors import NBMFError
from serve import codec_ops, schemas

JSON_TYPES = ("application/json",)
RAW_TYPE = "application/octet-stream"
ERROR_STATUS = {"CorruptBlobError": 400, "LegacySignatureError": 400, "FormatError": 400,
                "UnknownVersionError": 404, "OutputTooLargeError": 413}


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str, headers: dict | None = None):
        super().__init__(detail)
        self.status, self.error, self.detail, self.headers = status, error, detail, headers


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: text payloads may hold lone surrogates, which UTF-8 cannot carry."""

    def render(self, content) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


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


def parse_json(body: bytes):
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as e:
        raise ApiError(400, "MalformedJSON", f"request body is not valid JSON: {e}") from None


def validate(model: type[BaseModel], data):
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ApiError(422, "ValidationError", _describe(e)) from None


def _describe(e: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, err['loc'])) or 'body'}: {err['msg']}" for err in e.errors())


def client_error(name: str, message: str) -> ApiError:
    return ApiError(ERROR_STATUS.get(name, 400), name, message)


def blob_from_json(obj) -> bytes | dict:
    """An envelope -> blob bytes; a legacy dict stays a dict; base64 text -> bytes."""
    if isinstance(obj, str):
        try:
            return schemas.b64decode(obj, "blob")
        except ValueError as e:
            raise ApiError(400, "MalformedBlob", str(e)) from None
    if not isinstance(obj, dict):
        raise ApiError(400, "MalformedBlob", "a blob is a JSON envelope object, a legacy dict, or base64 text")
    if {"meta", "code"} <= obj.keys():
        return obj
    try:
        return codec_ops.from_envelope(obj)
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
        return json.loads(text)
    except ValueError as e:
        raise ApiError(400, "InvalidPayload", f"kind 'json' needs a JSON document: {e}") from None
