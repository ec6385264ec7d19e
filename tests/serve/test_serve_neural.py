"""Neural versions behind Serve: versioned decode routing (multiplexing), canary, batching bits, fallback.

Two real artifacts (tiny models trained for a few seconds and exported through ``nbmf.export``) are
registered as v1 and v2; the model deployment loads them through a loader that can be made to fail.
"""
from __future__ import annotations

import concurrent.futures as cf
import functools
import time
from pathlib import Path

import pytest

from serve.canary import CanaryRouter

pytestmark = [pytest.mark.ray, pytest.mark.timeout(420)]

APP = "nbmf-neural"
SHARE = 0.5
ENCODE_TIMEOUT_S = 4.0  # models are preloaded, so only an injected stall gets near it
CODEC_S = 3.0  # the replica's codec deadline: below decode_s (20), so a held decode is answered, not retried


def deploy(model_dir: Path, canary_share: float = SHARE) -> None:
    """Deploy serve/config.yaml the way `serve deploy` does (controller.apply_config), sized for a test."""
    import yaml
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    cfg = yaml.safe_load((Path(__file__).resolve().parents[2] / "serve" / "config.yaml").read_text())
    (app,) = cfg["applications"]
    app["name"] = APP
    app["args"].update(model_dir=str(model_dir), loader="tests.serve.fault_loader:load", model_num_cpus=0.1,
                       ingress_num_cpus=0.1, replica_resources={},  # a test's local Ray has no cpu_node
                       timeouts={"encode_s": ENCODE_TIMEOUT_S, "decode_s": 20.0, "decode_attempts": 2,
                                 "retry_backoff_s": 0.2, "codec_s": CODEC_S})
    deployments = {d["name"]: d for d in app["deployments"]}
    deployments["CodecModel"]["autoscaling_config"].update(min_replicas=1, max_replicas=1)
    deployments["CodecModel"]["user_config"] = {"preload": ["v2"]}
    deployments["Ingress"]["num_replicas"] = 1
    deployments["Ingress"]["user_config"] = {"current": "v1", "candidate": "v2", "canary_share": canary_share}
    _get_global_client().deploy_apps(ServeDeploySchema.model_validate({"applications": [app]}), _blocking=True)


@pytest.fixture(scope="module")
def neural_app(serve_base_url, neural_model_dir):
    from ray import serve

    deploy(neural_model_dir)
    yield neural_model_dir
    serve.delete(APP)


@pytest.fixture()
def client(neural_app, http):
    return http


@pytest.fixture(scope="module")
def records(sample_payloads):
    return sample_payloads[:40]


@functools.lru_cache(maxsize=2)
def library(model_dir: Path):
    from nbmf.registry import Registry

    return Registry.from_dir(model_dir)


def library_blob(model_dir: Path, payload, version: str) -> bytes:
    """What the codec library itself writes (the service must write exactly this)."""
    return library(model_dir).encode(payload, version=version)


def encoder_of(blob: bytes) -> int:
    from nbmf.blob import peek_header

    return peek_header(blob).encoder_id


def rid_for(version: str) -> str:
    """A record id that the canary routes to ``version``."""
    return next(f"pin-{i}" for i in range(10_000) if CanaryRouter("v1", "v2", SHARE).choose(f"pin-{i}") == version)


def encode(client, payload, record_id=None):
    r = client.post("/v1/encode", json={"payload": payload, "record_id": record_id, "format": "raw"})
    assert r.status_code == 200, r.text
    return r


def decode_raw(client, blob: bytes):
    return client.post("/v1/decode", content=blob, headers={"content-type": "application/octet-stream"})


def test_versions_lists_both(client):
    v = client.get("/v1/versions").json()
    assert [x["name"] for x in v["versions"]] == ["stub", "v1", "v2"]
    assert (v["current"], v["candidate"], v["canary_share"]) == ("v1", "v2", SHARE)


def test_canary_routing_is_sticky_and_proportional(client, records):
    router = CanaryRouter("v1", "v2", SHARE)
    ids = [f"mem-{i}" for i in range(120)]
    routed = {}
    for i, rid in enumerate(ids):
        r = encode(client, records[i % len(records)], rid)
        routed[rid] = r.headers["x-nbmf-version"]
        if "x-nbmf-fallback" not in r.headers:
            assert r.headers["x-nbmf-encoder"] == routed[rid]  # the routed version wrote it
    assert routed == {rid: router.choose(rid) for rid in ids}  # exactly the sticky hash's choice
    share = sum(v == "v2" for v in routed.values()) / len(ids)
    assert abs(share - SHARE) < 0.15  # 120 draws: sd 0.046
    again = {rid: encode(client, "again", rid).headers["x-nbmf-version"] for rid in ids[:20]}
    assert again == {rid: routed[rid] for rid in ids[:20]}


def test_each_version_decodes_with_its_own_model(client, records, neural_app):
    """The same records written by v1 and by v2: different bytes, each decoded by its own model."""
    by_version = {}
    for version in ("v1", "v2"):
        blobs = [library_blob(neural_app, p, version) for p in records]
        neural = [b for b in blobs if encoder_of(b)]  # the codec kept these (its safety net may pick the stub)
        assert len(neural) >= 5, f"{version} fell back to the stub on almost every record"
        by_version[version] = blobs
        for payload, blob in zip(records, blobs):
            r = decode_raw(client, blob)
            assert r.status_code == 200, r.text
            assert r.json()["payload"] == payload
            assert r.json()["version"] == (version if encoder_of(blob) else "stub")
    assert by_version["v1"] != by_version["v2"]  # decoding with the wrong model could not have worked


def test_service_writes_the_library_bytes_single_and_batched(client, records, neural_app):
    """@serve.batch (concurrent single requests) and encode_batch write bit-identical blobs."""
    rid = {v: rid_for(v) for v in ("v1", "v2")}
    items = [(p, "v1" if i % 2 else "v2") for i, p in enumerate(records[:24])]
    expected = [library_blob(neural_app, p, v) for p, v in items]
    with cf.ThreadPoolExecutor(8) as pool:  # concurrent: the model replica batches these
        singles = list(pool.map(lambda it: encode(client, it[0], rid[it[1]]).content, items))
    assert singles == expected
    r = client.post("/v1/encode_batch", json={"items": [{"payload": p, "record_id": rid[v]} for p, v in items]})
    assert r.status_code == 200, r.text
    from nbmf.blob import from_envelope

    assert [from_envelope(x["blob"]) for x in r.json()["results"]] == expected
    d = client.post("/v1/decode_batch", json={"blobs": [x["blob"] for x in r.json()["results"]]})
    assert [x["payload"] for x in d.json()["results"]] == [p for p, _ in items]


def test_rollout_step_reconfigures_without_restart(client, neural_app, records):
    """Raising the canary share is a user_config change: reconfigure() on the running replicas."""
    stats = client.get("/v1/stats").json()
    model_before = {a["name"] for a in _model_replicas()}
    try:
        deploy(neural_app, canary_share=1.0)
        assert client.get("/v1/versions").json()["canary_share"] == 1.0
        assert all(encode(client, records[0], f"r{i}").headers["x-nbmf-version"] == "v2" for i in range(10))
        assert client.get("/v1/stats").json()["replica"] == stats["replica"]  # same ingress replica
        assert {a["name"] for a in _model_replicas()} == model_before  # same model replica
    finally:
        deploy(neural_app)


def _model_replicas():
    import ray

    return [a for a in ray.util.list_named_actors(all_namespaces=True) if "CodecModel" in a["name"]]


def test_model_killed_encode_falls_back_decode_503_then_recovers(client, neural_app, records):
    import ray

    payload, blob = next((p, b) for p in records if encoder_of(b := library_blob(neural_app, p, "v1")) == 1)
    rid = rid_for("v1")
    assert decode_raw(client, blob).status_code == 200
    fallbacks_before = _fallbacks(client)

    fault = neural_app / "FAULT"
    fault.write_text("test: model deployment down")
    try:
        for actor in _model_replicas():
            ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True)
        r = encode(client, payload, rid)
        assert r.headers["x-nbmf-encoder"] == "stub" and r.headers["x-nbmf-fallback"]
        assert decode_raw(client, r.content).json()["payload"] == payload  # the stub blob is good
        d = decode_raw(client, blob)
        assert d.status_code == 503, d.text
        assert d.headers["retry-after"] and "never fall back" in d.json()["detail"]
        assert _fallbacks(client) > fallbacks_before
        assert client.get("/healthz").status_code == 200
    finally:
        fault.unlink()
    deadline = time.monotonic() + 120
    while True:  # Serve restarted the replica; loads succeed again (the first ones may be slow)
        d = decode_raw(client, blob)
        e = encode(client, payload, rid)
        if (d.status_code == 200 and "x-nbmf-fallback" not in e.headers) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert d.status_code == 200 and d.json()["payload"] == payload
    assert "x-nbmf-fallback" not in e.headers and e.headers["x-nbmf-encoder"] == e.headers["x-nbmf-version"]


def _fallbacks(client) -> int:
    return sum(f["count"] for f in client.get("/v1/stats").json()["fallbacks"])


def test_encode_times_out_to_stub_then_recovers(client, neural_app, records):
    payload, blob = next((p, b) for p in records if encoder_of(b := library_blob(neural_app, p, "v1")) == 1)
    rid = rid_for("v1")
    stall = ENCODE_TIMEOUT_S + 1.5
    slow = neural_app / "SLOW"
    slow.write_text(str(stall))
    try:
        t0 = time.monotonic()
        r = encode(client, payload, rid)
        assert r.headers["x-nbmf-fallback"] == "timeout" and r.headers["x-nbmf-encoder"] == "stub"
        assert time.monotonic() - t0 < stall  # answered at the timeout, not when the model woke up
    finally:
        slow.unlink()
    time.sleep(stall)  # let the stalled batch finish
    assert encode(client, payload, rid).content == blob


def _wait_for(predicate, what: str, limit_s: float = 60):
    deadline = time.monotonic() + limit_s
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def test_slow_decode_is_answered_once_and_the_replica_stays_responsive(client, neural_app, records):
    """A decode held on the model's codec thread: pings, health and other requests are answered meanwhile;
    the decode itself gets one 504 at the deadline (one attempt, not decode_attempts), then service resumes."""
    payload, blob = next((p, b) for p in records if encoder_of(b := library_blob(neural_app, p, "v1")) == 1)
    stub_blob = library_blob(neural_app, "stub record", "stub")  # decoded by the ingress, not the held replica
    hold, calls = neural_app / "HOLD", neural_app / "CALLS"
    calls.write_text("")
    hold.write_text("held by the test")
    try:
        with cf.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(decode_raw, client, blob)
            _wait_for(lambda: calls.read_text(), "the decode to reach the codec")
            health = client.get("/healthz").json()  # pings the model replica whose codec thread is held
            assert (health["status"], health["model"]) == ("ok", "ok"), health
            assert client.get("/v1/versions").status_code == 200
            assert decode_raw(client, stub_blob).json()["payload"] == "stub record"
            assert not pending.done()  # all of the above was answered while the decode was held
            r = pending.result()
        assert r.status_code == 504, r.text
        assert r.json()["error"] == "DeadlineExceeded" and "codec_s" in r.json()["detail"]
        assert calls.read_text().count("call") == 1  # answered once: the ingress did not retry it
    finally:
        hold.unlink(missing_ok=True)
        calls.unlink(missing_ok=True)
    _wait_for(lambda: decode_raw(client, blob).status_code == 200, "the model replica to decode again")
    assert decode_raw(client, blob).json()["payload"] == payload
