"""Typed builder arguments for ``build_app`` (pydantic: this is the Serve boundary).

``serve run serve.app:build_app model_dir=models current=v1`` passes strings; Serve validates them
against ``AppArgs`` before ``build_app`` runs, so a typo is an error at deploy time, not a 500 later.
The same fields appear under ``args:`` in serve/config.yaml.

>>> AppArgs(model_dir="models", candidate="v2", canary_share=0.1).canary_share
0.1
>>> AppArgs(canary_share=1.5)
Traceback (most recent call last):
    ...
pydantic_core._pydantic_core.ValidationError: 1 validation error for AppArgs
canary_share
  Input should be less than or equal to 1 ...
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nbmf.modeldir import check_domain, is_version_name


def check_version(name: str | None) -> str | None:
    """Encoder version names are ``stub`` or ``vN`` (N >= 1); anything else is a config error."""
    if name is not None and not is_version_name(name):
        raise ValueError(f"encoder versions are named 'stub', 'v1', 'v2', ...; got {name!r}")
    return name


class Limits(BaseModel):
    """Request size limits; over a limit -> HTTP 413, refused before any codec work."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_request_bytes: int = Field(4 << 20, gt=0)  # bytes of HTTP body; records are ~100 B - 16 KiB
    max_batch_items: int = Field(256, gt=0)  # items per /v1/*_batch call
    max_output_bytes: int = Field(16 << 20, gt=0)  # decompression-bomb guard on decode (header length)
    # Per batch call, so one request cannot make the ingress hold (and answer) items x max_output_bytes:
    max_batch_output_bytes: int = Field(16 << 20, gt=0)  # sum of what a decode batch's blobs claim to decode to
    max_batch_input_bytes: int = Field(4 << 20, gt=0)  # sum of an encode batch's payloads (raw bytes)


class Timeouts(BaseModel):
    """Per-request budgets for calls from the ingress to the model deployment (seconds)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    encode_s: float = Field(1.0, gt=0)  # past this, encode falls back to the stub
    decode_s: float = Field(2.0, gt=0)  # per attempt; decode never falls back
    decode_attempts: int = Field(3, ge=1)  # then 503
    retry_backoff_s: float = Field(0.2, ge=0)  # doubled after each failed attempt
    # Deadline of one codec call (a batch) on a replica's codec thread, ingress and model alike: past it the
    # request gets 504 (decode: never retried; encode: the stub writes it). Below decode_s, so that the model
    # replica answers a slow blob before the ingress gives up on the attempt and retries it.
    codec_s: float = Field(1.5, gt=0)

    @model_validator(mode="after")
    def _codec_before_decode(self):
        if self.codec_s >= self.decode_s:
            raise ValueError(f"codec_s ({self.codec_s}) must be below decode_s ({self.decode_s}): the model replica "
                             "must answer a slow decode before the ingress retries it")
        return self


class Autoscaling(BaseModel):
    """Serve ``autoscaling_config`` for the model deployment (replicas of the neural codec)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(3, ge=1)
    target_ongoing_requests: float = Field(4.0, gt=0)  # per replica; Serve scales up past it
    upscale_delay_s: float = Field(3.0, ge=0)
    downscale_delay_s: float = Field(60.0, ge=0)

    @model_validator(mode="after")
    def _bounds(self):
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) > max_replicas ({self.max_replicas})")
        return self


class DomainRoute(BaseModel):
    """One domain's encode routing (ingress user_config ``domains``): its current version, canary candidate and
    share. ``current`` None: the domain's entry of the model dir's DOMAINS.json, else the app's current."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    current: str | None = None
    candidate: str | None = None
    canary_share: float = Field(0.0, ge=0.0, le=1.0)

    @field_validator("current", "candidate")
    @classmethod
    def _version(cls, v):
        return check_version(v)


def check_domains(domains: dict) -> dict:
    for name in domains:
        check_domain(name)
    return domains


class AppArgs(BaseModel):
    """Everything ``build_app`` needs; defaults are the development setup on one machine."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_dir: str | None = None  # None: env NBMF_MODEL_DIR, else <repo>/models
    current: str | None = None  # None: the model dir's CURRENT, else "stub"
    candidate: str | None = None  # canary version; None = no canary
    canary_share: float = Field(0.0, ge=0.0, le=1.0)  # 0.1 -> 0.5 -> 1.0 during a rollout
    # per-domain routing over the model dir's DOMAINS.json (domains it names route to their version without this)
    domains: dict[str, DomainRoute] = Field(default_factory=dict)
    loader: str = "serve.codec_ops:load_codec"  # "module:function"(model_dir, version) -> codec
    max_models_per_replica: int = Field(4, ge=1)  # LRU of loaded versions per model replica
    preload: list[str] = Field(default_factory=list)  # versions loaded at replica start (plus current/candidate)
    max_batch_size: int = Field(16, ge=1)  # @serve.batch on the model deployment
    batch_wait_timeout_s: float = Field(0.002, ge=0)  # seconds a batch waits to fill
    replicas: int | None = Field(None, ge=1)  # fixed model replicas; None -> autoscaling
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    ingress_replicas: int = Field(1, ge=1)
    model_num_cpus: float = Field(0.5, ge=0)  # CPUs reserved per model replica
    model_threads: int | None = Field(None, ge=1)  # codec threads per model replica; None -> ceil(model_num_cpus)
    model_num_gpus: float = Field(0, ge=0)  # GPUs per model replica; > 0 runs its codecs on CUDA (NBMF_DEVICE)
    ingress_num_cpus: float = Field(0.25, ge=0)
    # custom Ray resources every replica asks for: on the cluster {cpu_node: 0.001} keeps Serve off the GPU nodes
    # (cluster.yaml gives only CPU nodes cpu_node); a replica with model_num_gpus > 0 leaves them out
    replica_resources: dict[str, float] = Field(default_factory=dict)
    max_ongoing_requests: int = Field(32, ge=1)  # per model replica
    limits: Limits = Field(default_factory=Limits)
    timeouts: Timeouts = Field(default_factory=Timeouts)

    @field_validator("current", "candidate")
    @classmethod
    def _version(cls, v):
        return check_version(v)

    @field_validator("domains")
    @classmethod
    def _domains(cls, v):
        return check_domains(v)

    @field_validator("preload")
    @classmethod
    def _preload(cls, v):
        for name in v:
            check_version(name)
        return v

    @field_validator("loader")
    @classmethod
    def _loader(cls, v):
        if v.count(":") != 1 or not all(v.split(":")):
            raise ValueError(f"loader is 'package.module:function'; got {v!r}")
        return v
