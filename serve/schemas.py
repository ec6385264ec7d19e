"""HTTP request/response models (pydantic: the HTTP boundary only) and the payload conversions they need.

Bytes payloads travel inside JSON as base64 with ``kind: "bytes"``; text and JSON payloads travel as
themselves. A binary blob travels as the JSON envelope (``nbmf.blob.to_envelope``) or as raw bytes
with ``Content-Type: application/octet-stream``.
"""
from __future__ import annotations

import base64
import binascii
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nbmf.modeldir import MAX_DOMAIN_LEN, check_domain

Kind = Literal["text", "json", "bytes"]
Fidelity = Literal["lossless", "semantic"]
BlobFormat = Literal["envelope", "raw"]


def b64decode(text: str, what: str = "payload") -> bytes:
    """Strict base64 (no stray characters, correct padding): sloppy input is an error, not a guess."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"{what} is not valid base64 ({e})") from None


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class EncodeItem(BaseModel):
    """One record to encode. ``kind`` None: str -> text, anything else -> json; bytes need ``kind: bytes``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"payload": "user prefers dark mode", "fidelity": "lossless", "record_id": "mem-1"}]})

    payload: Any = Field(..., description="text, any JSON value, or base64 when kind is 'bytes'")
    fidelity: Fidelity = "lossless"
    kind: Kind | None = None
    record_id: str | None = Field(None, max_length=512, description="sticky canary routing key")
    domain: str | None = Field(None, max_length=MAX_DOMAIN_LEN,
                               description="the record's domain (e.g. legal, or a tenant id): encoded with that domain's "
                                           "version; a domain without one, or none, gets the default")

    @field_validator("domain")
    @classmethod
    def _domain(cls, v):
        return v if v is None else check_domain(v)

    @model_validator(mode="after")
    def _kind_fits_payload(self):
        if self.kind == "bytes" and not isinstance(self.payload, str):
            raise ValueError("kind 'bytes' takes the payload as a base64 string")
        if self.kind == "bytes":
            b64decode(self.payload)
        if self.kind == "text" and not isinstance(self.payload, str):
            raise ValueError(f"kind 'text' takes a string payload, got {type(self.payload).__name__}")
        return self

    def to_item(self) -> tuple:
        """``(payload, kind, fidelity)`` as the codec library takes it (bytes decoded from base64)."""
        kind = self.kind or ("text" if isinstance(self.payload, str) else "json")
        payload = b64decode(self.payload) if kind == "bytes" else self.payload
        return payload, kind, self.fidelity


class EncodeRequest(EncodeItem):
    format: BlobFormat = Field("envelope", description="'envelope': JSON (base64 body); 'raw': octet-stream")


class Envelope(BaseModel):
    """The JSON form of a blob (``nbmf.blob.to_envelope``); converts back to the identical bytes."""

    model_config = ConfigDict(extra="allow")

    format: int | str
    encoder: str
    fidelity: str
    kind: str
    length: int
    crc32: int | str
    body: str = Field(..., description="base64 of the codec body")


class EncodeBatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[EncodeItem] = Field(..., min_length=1)


class EncodeResult(BaseModel):
    blob: dict = Field(..., description="the JSON envelope")
    version: str = Field(..., description="encoder version the request was routed to (canary)")
    encoder: str = Field(..., description="encoder version that wrote the blob ('stub' after a fallback to the stub; "
                                          "the routed version when its zstd fallback wrote it)")
    fallback: str | None = Field(None, description="why the routed version's neural coder did not write it (the stub "
                                                   "or the version's zstd fallback did): timeout, unavailable, load, "
                                                   "error, mismatch, larger, large")


class EncodeBatchResponse(BaseModel):
    results: list[EncodeResult]


class DecodeResponse(BaseModel):
    payload: Any = Field(..., description="text, JSON value, or base64 for kind 'bytes'")
    kind: Kind
    fidelity: Fidelity
    version: str = Field(..., description="encoder version that wrote the blob ('legacy' for old stub dicts)")
    truncated: bool = Field(False, description="semantic legacy blobs kept only a 2048-character preview")


class DecodeBatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    blobs: list[dict | str] = Field(..., min_length=1,
                                    description="JSON envelopes, legacy dicts, or base64 of binary blobs")


class ItemError(BaseModel):
    status: int
    error: str
    detail: str


class DecodeBatchResponse(BaseModel):
    results: list[DecodeResponse | ItemError]


class VersionInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    encoder_id: int | None = None


class DomainRouting(BaseModel):
    current: str
    candidate: str | None
    canary_share: float


class VersionsResponse(BaseModel):
    current: str
    candidate: str | None
    canary_share: float
    domains: dict[str, DomainRouting] = Field(default_factory=dict, description="domains routed on their own")
    versions: list[VersionInfo]


def decode_response(outcome) -> DecodeResponse:
    """A decoded record as JSON; bytes become base64 so the response stays valid JSON."""
    payload = outcome.payload
    if outcome.kind == "bytes":
        payload = b64encode(payload)
    return DecodeResponse(payload=payload, kind=outcome.kind, fidelity=outcome.fidelity,
                          version=outcome.version, truncated=outcome.truncated)
