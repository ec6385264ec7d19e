"""Fixtures for the Serve tests: one local Ray per session, Serve on a free loopback port, helpers."""
from __future__ import annotations

import hashlib
import json
import os
import socket
import zlib
from pathlib import Path

import pytest

for _k, _v in {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "WANDB_MODE": "offline"}.items():
    os.environ.setdefault(_k, _v)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


HERE = Path(__file__).resolve().parent
_serve: dict = {}  # the running Serve instance: url, and whether this suite started Ray


@pytest.fixture(scope="session")
def serve_base_url():
    """A local Ray (reused when the test process already has one) with Serve's proxy on a free port.

    Shared by the Serve test modules, and stopped as soon as the last of them is done (see the hook
    below) rather than at the end of the session, so later suites get the machine back.
    """
    ray = pytest.importorskip("ray")
    from ray import serve

    if not _serve:
        started = False
        if not ray.is_initialized():
            # address="local": a private cluster, never one that someone started with `ray start` on this box.
            # 4 logical CPUs on a 2-core box: replicas reserve 0.1 CPU each and mostly wait on I/O.
            metrics_port = _free_port()  # Prometheus text from Ray's metrics agent
            ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
                     _metrics_export_port=metrics_port,
                     runtime_env={"env_vars": {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}})
            started = True
        port = _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        _serve.update(url=f"http://127.0.0.1:{port}", started=started,
                      metrics_url=f"http://127.0.0.1:{metrics_port}/metrics" if started else None)
    yield _serve["url"]
    _stop_serve()


def _stop_serve() -> None:
    if not _serve:
        return
    import ray
    from ray import serve

    serve.shutdown()
    if _serve["started"]:
        ray.shutdown()
    _serve.clear()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    result = yield  # the items' own fixtures (serve.delete of each app) are torn down first
    if nextitem is None or HERE not in nextitem.path.parents:
        _stop_serve()
    return result


@pytest.fixture()
def prometheus_url(serve_base_url):
    """Where Ray exports the Serve metrics (only when this suite started Ray and chose the port)."""
    if not _serve.get("metrics_url"):
        pytest.skip("Ray was started elsewhere; its metrics port is unknown")
    return _serve["metrics_url"]


@pytest.fixture()
def http(serve_base_url):
    import httpx

    with httpx.Client(base_url=serve_base_url, timeout=60) as client:
        yield client


@pytest.fixture(scope="session")
def make_legacy_blob():
    return legacy_blob


def legacy_blob(payload, fidelity: str = "lossless") -> dict:
    """A blob exactly as the old stub wrote it (issue 2, item 3)."""
    if fidelity == "lossless":
        raw = json.dumps(payload, ensure_ascii=False).encode()
        meta = {"fidelity": "lossless", "type": "text" if isinstance(payload, str) else "json",
                "length_bytes": len(raw)}
        code = zlib.compress(raw, 9).hex()
        sig = hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        return {"meta": meta, "code": code, "sig": sig}
    canonical = (" ".join(payload.split()) if isinstance(payload, str)
                 else json.dumps(payload, ensure_ascii=False, sort_keys=True))
    preview = canonical[:2048]
    return {"meta": {"fidelity": "semantic", "type": "text" if isinstance(payload, str) else "json",
                     "preview_length": len(preview)},
            "code": preview.encode().hex(),
            "sig": hashlib.sha256(canonical.encode()).hexdigest()}


REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample"


def _records(name: str, limit: int) -> list:
    with open(SAMPLE / name, encoding="utf-8") as f:
        return [json.loads(line)["data"] for line, _ in zip(f, range(limit))]


@pytest.fixture(scope="session")
def sample_payloads() -> list:
    """Held-out records (text documents, conversations, structured JSON) from the bundled sample."""
    return _records("val.jsonl", 200)


@pytest.fixture(scope="session")
def neural_model_dir(tmp_path_factory):
    """A model registry directory with two real neural versions (v1 transformer, v2 cnn) and CURRENT=v1."""
    from helpers.artifacts import tiny_artifact

    out = tmp_path_factory.mktemp("neural-models")
    tiny_artifact(out / "v1", version="v1", family="transformer", seed=1)
    tiny_artifact(out / "v2", version="v2", family="cnn", seed=2)
    (out / "CURRENT").write_text("v1\n")
    return out
