"""The HTTP API on real Serve: stub round trips, legacy blobs, batch endpoints, and every bad input -> 4xx.

The model directory here holds no neural version, so everything runs in the ingress; the neural paths
(multiplexing, canary, fallback) are in test_serve_neural.py.
"""
from __future__ import annotations

import base64
import json

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]

APP = "nbmf-http"
MAX_OUTPUT = 64 << 10
PAYLOADS = [
    ("text", "user prefers dark mode"),
    ("text", ""),
    ("text", "emoji \U0001f600 and accents àéî, CJK 漢字"),
    ("json", {"messages": [{"role": "user", "content": "hi"}], "n": [1, 2.5, None, True]}),
    ("json", "a JSON string"),
    ("json", None),
    ("bytes", bytes(range(256))),
]


@pytest.fixture(scope="module")
def app_url(serve_base_url, tmp_path_factory):
    from ray import serve

    from serve.app import build_app
    from serve.args import AppArgs

    model_dir = tmp_path_factory.mktemp("models")  # no neural version: stub only
    args = AppArgs(model_dir=str(model_dir), replicas=1, model_num_cpus=0.1, ingress_num_cpus=0.1,
                   limits={"max_request_bytes": 256 << 10, "max_batch_items": 16, "max_output_bytes": MAX_OUTPUT})
    serve.run(build_app(args), name=APP, route_prefix="/", blocking=False)
    yield serve_base_url
    serve.delete(APP)


@pytest.fixture()
def client(app_url, http):
    return http


def encode_body(kind, payload, **extra):
    if kind == "bytes":
        payload = base64.b64encode(payload).decode()
    return {"payload": payload, "kind": kind, **extra}


def expected_json_payload(kind, payload):
    return base64.b64encode(payload).decode() if kind == "bytes" else payload


@pytest.mark.parametrize("fmt", ["envelope", "raw"])
@pytest.mark.parametrize("kind, payload", PAYLOADS, ids=[f"{k}-{i}" for i, (k, _) in enumerate(PAYLOADS)])
def test_encode_decode_round_trip(client, fmt, kind, payload):
    r = client.post("/v1/encode", json=encode_body(kind, payload, format=fmt, record_id="mem-1"))
    assert r.status_code == 200, r.text
    assert r.headers["x-nbmf-version"] == "stub" and r.headers["x-nbmf-encoder"] == "stub"
    if fmt == "raw":
        assert r.headers["content-type"] == "application/octet-stream"
        d = client.post("/v1/decode", content=r.content, headers={"content-type": "application/octet-stream"})
    else:
        envelope = r.json()
        assert envelope["encoder"] == "stub" and envelope["kind"] == kind
        d = client.post("/v1/decode", json=envelope)
    assert d.status_code == 200, d.text
    out = d.json()
    assert out == {"payload": expected_json_payload(kind, payload), "kind": kind, "fidelity": "lossless",
                   "version": "stub", "truncated": False}


def test_raw_request_body_encodes(client):
    raw = "plain text body, no JSON".encode()
    r = client.post("/v1/encode", params={"kind": "text"}, content=raw,
                    headers={"content-type": "application/octet-stream"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    d = client.post("/v1/decode", content=r.content, headers={"content-type": "application/octet-stream"})
    assert d.json()["payload"] == raw.decode() and d.json()["kind"] == "text"


def test_lone_surrogate_text_round_trips(client):
    # JSON "\ud800" escapes are valid JSON; the response must stay valid (escaped) JSON too
    body = '{"payload": "lone \\ud800 surrogate", "kind": "text"}'
    r = client.post("/v1/encode", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    d = client.post("/v1/decode", json=r.json())
    assert d.status_code == 200 and "\\ud800" in d.text
    assert json.loads(d.text)["payload"] == "lone \ud800 surrogate"


def test_semantic_fidelity(client):
    r = client.post("/v1/encode", json={"payload": "  spaced   out\ttext \n", "fidelity": "semantic"})
    d = client.post("/v1/decode", json=r.json()).json()
    assert d["payload"] == "spaced out text" and d["fidelity"] == "semantic"


@pytest.mark.parametrize("payload", ["legacy text record", {"messages": [{"role": "user", "content": "héllo"}]}])
def test_legacy_blob_decodes(client, payload, make_legacy_blob):
    legacy = make_legacy_blob(payload)
    for resp in (client.post("/v1/decode", json=legacy),
                 client.post("/v1/decode", content=json.dumps(legacy).encode(),
                             headers={"content-type": "application/octet-stream"})):
        assert resp.status_code == 200, resp.text
        out = resp.json()
        assert out["payload"] == payload and out["version"] == "legacy" and out["truncated"] is False


def test_legacy_semantic_truncated_preview(client, make_legacy_blob):
    payload = "word " * 1000  # canonical form 4999 chars > 2048
    out = client.post("/v1/decode", json=make_legacy_blob(payload, "semantic")).json()
    assert out["truncated"] is True and out["payload"] == " ".join(payload.split())[:2048]


def test_legacy_tampered_signature_is_400(client, make_legacy_blob):
    legacy = make_legacy_blob("signed")
    legacy["sig"] = "0" * 64
    r = client.post("/v1/decode", json=legacy)
    assert r.status_code == 400 and r.json()["error"] in ("LegacySignatureError", "CorruptBlobError")


def test_batch_endpoints(client, make_legacy_blob):
    items = [encode_body(k, p, record_id=f"r{i}") for i, (k, p) in enumerate(PAYLOADS)]
    r = client.post("/v1/encode_batch", json={"items": items})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["encoder"] for x in results] == ["stub"] * len(items)
    # batch encode writes the same bytes as one-by-one encode
    singles = [client.post("/v1/encode", json=it).json() for it in items]
    assert [x["blob"] for x in results] == singles
    blobs = [x["blob"] for x in results] + [make_legacy_blob("old"), "not base64!", {"format": 1}]
    d = client.post("/v1/decode_batch", json={"blobs": blobs})
    assert d.status_code == 200, d.text
    out = d.json()["results"]
    assert [o["payload"] for o in out[:len(items)]] == [expected_json_payload(k, p) for k, p in PAYLOADS]
    assert out[len(items)]["payload"] == "old" and out[len(items)]["version"] == "legacy"
    assert out[-2]["status"] == 400 and out[-1]["status"] == 400  # per-item errors, the rest still decoded


def flip(blob: bytes, i: int) -> bytes:
    b = bytearray(blob)
    b[i] ^= 0x10
    return bytes(b)


def raw_blob(client, payload="some record to corrupt"):
    return client.post("/v1/encode", json={"payload": payload, "format": "raw"}).content


def post_raw(client, path, content, **kw):
    return client.post(path, content=content, headers={"content-type": "application/octet-stream"}, **kw)


def test_corrupt_blobs_are_400(client):
    blob = raw_blob(client)
    for i in range(len(blob)):
        r = post_raw(client, "/v1/decode", flip(blob, i))
        assert 400 <= r.status_code < 500, (i, r.status_code, r.text)
    for cut in range(len(blob)):
        r = post_raw(client, "/v1/decode", blob[:cut])
        assert 400 <= r.status_code < 500, (cut, r.text)
    assert post_raw(client, "/v1/decode", blob + b"\0").status_code == 400


def test_unknown_version_is_404(client):
    from nbmf import blob as nbmf_blob

    # a checksum-valid blob that names a version this service does not hold
    forged = nbmf_blob.pack(encoder_id=9, fidelity=nbmf_blob.Fidelity.LOSSLESS, kind=nbmf_blob.Kind.TEXT,
                            original_length=1, body=b"\x00")
    r = client.post("/v1/decode", json=nbmf_blob.to_envelope(forged))
    assert r.status_code == 404, r.text
    assert "v9" in r.json()["detail"] and "stub" in r.json()["detail"]


@pytest.mark.parametrize("path, kwargs, status", [
    ("/v1/encode", {"content": b"hello", "headers": {"content-type": "text/plain"}}, 415),
    ("/v1/encode", {"content": b"hello"}, 415),
    ("/v1/decode", {"content": b"x", "headers": {"content-type": "multipart/form-data"}}, 415),
    ("/v1/encode_batch", {"content": b"{}", "headers": {"content-type": "application/octet-stream"}}, 415),
    ("/v1/encode", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 400),
    ("/v1/decode", {"content": b"[1, 2", "headers": {"content-type": "application/json"}}, 400),
    ("/v1/encode", {"json": {"payload": "x", "fidelity": "lossy"}}, 422),
    ("/v1/encode", {"json": {"payload": "x", "kind": "bytes"}}, 422),
    ("/v1/encode", {"json": {"text": "x"}}, 422),
    ("/v1/decode", {"json": [1, 2]}, 400),
    ("/v1/decode", {"json": {"encoder": "stub", "body": "!!"}}, 400),
    ("/v1/decode", {"content": b"", "headers": {"content-type": "application/octet-stream"}}, 400),
    ("/v1/encode", {"content": b"\xff\xfe", "params": {"kind": "text"},
                    "headers": {"content-type": "application/octet-stream"}}, 400),
    ("/v1/encode", {"content": b"{", "params": {"kind": "json"},
                    "headers": {"content-type": "application/octet-stream"}}, 400),
    ("/v1/encode", {"content": b"x", "params": {"kind": "xml"},
                    "headers": {"content-type": "application/octet-stream"}}, 422),
    ("/v1/encode", {"json": {"payload": "x" * (300 << 10)}}, 413),
    ("/v1/encode_batch", {"json": {"items": [{"payload": "x"}] * 17}}, 413),
    ("/v1/decode_batch", {"json": {"blobs": []}}, 422),
])
def test_bad_input_is_4xx(client, path, kwargs, status):
    r = client.post(path, **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["detail"]


def test_oversized_output_is_413(client):
    big = client.post("/v1/encode", json={"payload": "a" * (MAX_OUTPUT + 1), "format": "raw"})
    assert big.status_code == 200  # compresses to a small blob ...
    r = post_raw(client, "/v1/decode", big.content)  # ... that would inflate past the guard
    assert r.status_code == 413, r.text


def test_chunked_oversized_body_is_413(client):
    def chunks():
        for _ in range(40):
            yield b"x" * (8 << 10)  # 320 KiB, no Content-Length

    r = client.post("/v1/encode", content=chunks(), headers={"content-type": "application/octet-stream"})
    assert r.status_code == 413


def test_versions_health_docs(client):
    v = client.get("/v1/versions").json()
    assert v["current"] == "stub" and v["versions"] == [{"name": "stub", "encoder_id": 0}]
    h = client.get("/healthz")
    assert h.status_code == 200 and h.json()["status"] == "ok"
    spec = client.get("/openapi.json").json()
    assert {"/v1/encode", "/v1/decode", "/v1/encode_batch", "/v1/decode_batch", "/v1/versions", "/healthz"} <= set(spec["paths"])
    assert "application/octet-stream" in spec["paths"]["/v1/encode"]["post"]["requestBody"]["content"]
    assert client.get("/docs").status_code == 200


def test_metrics_count_requests(client):
    before = client.get("/v1/stats").json()
    client.post("/v1/encode", json={"payload": "count me"})
    after = client.get("/v1/stats").json()

    def n(stats):
        return sum(r["count"] for r in stats["requests"] if r["op"] == "encode" and r["version"] == "stub")

    assert n(after) == n(before) + 1


def test_metrics_reach_prometheus(client, prometheus_url):
    """Per-version counters and latency histograms are exported by Ray (Prometheus text format)."""
    import time

    import httpx

    client.post("/v1/encode", json={"payload": "exported"})
    deadline, lines = time.monotonic() + 60, []
    while time.monotonic() < deadline:  # Ray's metrics agent publishes every few seconds
        text = httpx.get(prometheus_url, timeout=10).text
        lines = [ln for ln in text.splitlines() if ln.startswith("ray_nbmf_") and 'component="ingress"' in ln]
        if any(ln.startswith("ray_nbmf_requests") for ln in lines) and any("ray_nbmf_latency_ms_bucket" in ln for ln in lines):
            break
        time.sleep(2)
    requests = [ln for ln in lines if ln.startswith("ray_nbmf_requests")]
    assert any('op="encode"' in ln and 'version="stub"' in ln and 'outcome="ok"' in ln for ln in requests), lines[:5]
    assert any('le="120.0"' in ln for ln in lines if "ray_nbmf_latency_ms_bucket" in ln)
