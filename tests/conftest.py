"""Fixtures shared by every test directory: corpus records, a stub-only registry, quiet Ray/W&B defaults.

The environment defaults make the README's bare ``python -m pytest`` behave like ``.ci/run``: Ray with
token auth off and no usage stats, W&B offline. ``setdefault`` keeps anything the caller exported.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nbmf.data.corpus import read_corpus

ENV_DEFAULTS = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "WANDB_MODE": "offline"}

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_VAL = ROOT / "data" / "sample" / "val.jsonl"
SHARED_VAL = ROOT.parent / "shared" / "corpus" / "val.jsonl"


def pytest_configure(config):
    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


@pytest.fixture(scope="session")
def sample_records() -> list[dict]:
    """Held-out corpus records: the bundled sample, or the first 200 of the shared corpus without it."""
    if SAMPLE_VAL.is_file():
        return read_corpus(SAMPLE_VAL)
    if SHARED_VAL.is_file():
        return read_corpus(SHARED_VAL, limit=200)
    pytest.fail(f"no sample records: expected {SAMPLE_VAL} (bundled) or {SHARED_VAL}")


@pytest.fixture(scope="session")
def sample_payloads(sample_records) -> list:
    """The ``data`` of each sample record: a str (document) or a JSON value (conversation, structured)."""
    return [r["data"] for r in sample_records]


@pytest.fixture(scope="session")
def stub_registry():
    """A registry that holds only the stub: no model directory, so nothing neural is ever loaded."""
    from nbmf.registry import Registry

    return Registry(model_dir=None)


def build_legacy_blob(payload, fidelity: str = "lossless", length_field: str | None = None) -> dict:
    """A blob exactly as the old stub service wrote it (issue 2, item 3).

    lossless: code = hex(zlib-9(json.dumps(payload, ensure_ascii=False).encode())),
              sig = sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False)).
    semantic: canonical = " ".join(text.split()) for text, else json.dumps(payload, ensure_ascii=False,
              sort_keys=True); code = hex(UTF-8 of its first 2048 characters); sig = sha256(canonical).
    ``length_field`` picks which meta length the old writer put there ("length_bytes" or "preview_length").
    """
    import hashlib
    import zlib

    if fidelity == "lossless":
        dumped = json.dumps(payload, ensure_ascii=False)
        code = zlib.compress(dumped.encode(), 9).hex()
        sig = hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        length_field = length_field or "length_bytes"
        length = len(dumped.encode())
    elif fidelity == "semantic":
        if isinstance(payload, str):
            canon = " ".join(payload.split())
        else:
            canon = json.dumps(payload, ensure_ascii=False, sort_keys=True)
        preview = canon[:2048]
        code = preview.encode().hex()
        sig = hashlib.sha256(canon.encode()).hexdigest()
        length_field = length_field or "preview_length"
        length = len(preview) if length_field == "preview_length" else len(canon.encode())
    else:
        raise ValueError(fidelity)
    meta = {"fidelity": fidelity, "type": type(payload).__name__, length_field: length}
    return {"meta": meta, "code": code, "sig": sig}


@pytest.fixture(scope="session")
def make_legacy_blob():
    """``build_legacy_blob`` as a fixture, so every test directory can build legacy blobs the old way."""
    return build_legacy_blob


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A model registry directory holding one real (tiny, seconds to train) neural version: v1/ + CURRENT."""
    from helpers.artifacts import tiny_artifact

    d = tmp_path_factory.mktemp("models")
    tiny_artifact(d / "v1", steps=20)
    (d / "CURRENT").write_text("v1\n")
    return d


@pytest.fixture(scope="session")
def tiny_codec(tiny_model_dir):
    """The tiny v1 loaded once per session (loading verifies hashes and warms the runtime)."""
    from nbmf.codecs.neural import load_codec

    return load_codec(tiny_model_dir / "v1")


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory):
    """One private `ray start --head` node per test session, shared by the Train and Tune test modules
    (helpers.ray_jobs.session_head); their drivers run as subprocesses against it, so these tests neither
    depend on nor disturb a Ray instance another suite keeps in the test process."""
    from helpers.ray_jobs import session_head

    head, owner = session_head(tmp_path_factory.mktemp("ray") / "head.log")
    yield head
    if owner:
        head.stop()
