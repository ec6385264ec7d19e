"""The HTTP API on real Serve: stub round trips, legacy blobs, batch endpoints, and every bad input -> 4xx.

The model directory here holds no neural version, so everything runs in the ingress; the neural paths
(multiplexing, canary, fallback) are in test_serve_neural.py.
"""
from __future__ import annotations

import base64
import json

import pytest

from tests.serve.forge import forged, hostile_legacy, stub_json_blob

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]

APP = "nbmf-http"
MAX_OUTPUT = 64 << 10
BATCH_OUTPUT = 2 * MAX_OUTPUT  # a decode batch's budget of claimed output
BATCH_INPUT = 64 << 10  # an encode batch's budget of payload bytes
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
                   limits={"max_request_bytes": 256 << 10, "max_batch_items": 16, "max_output_bytes": MAX_OUTPUT,
                           "max_batch_output_bytes": BATCH_OUTPUT, "max_batch_input_bytes": BATCH_INPUT})
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


def test_legacy_tampered_signature_is_422(client, make_legacy_blob):
    legacy = make_legacy_blob("signed")
    legacy["sig"] = "0" * 64
    r = client.post("/v1/decode", json=legacy)
    assert r.status_code == 422 and r.json()["error"] in ("LegacySignatureError", "CorruptBlobError")


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


def test_envelope_json_text_decodes(client):
    """An envelope as stored in a JSON file (its text) decodes as the envelope object does: as a raw body, and as a
    string item of a batch (base64 never starts with '{')."""
    env = client.post("/v1/encode", json={"payload": "stored as JSON text"}).json()
    d = post_raw(client, "/v1/decode", json.dumps(env).encode())
    assert d.status_code == 200 and d.json()["payload"] == "stored as JSON text", d.text
    assert d.json()["version"] == "stub"
    out = client.post("/v1/decode_batch", json={"blobs": [json.dumps(env), env, "{not json", "{}"]}).json()["results"]
    assert out[0]["payload"] == out[1]["payload"] == "stored as JSON text"
    assert (out[2]["status"], out[3]["status"], out[3]["error"]) == (400, 400, "FormatError")
    assert post_raw(client, "/v1/decode", b'{"encoder": "stub"}').status_code == 400


def test_corrupt_blobs_are_4xx_or_the_exact_record(client):
    """A damaged blob is a 4xx, answered once; damage the codec ignores (a deflate stream's padding bits) gives
    back the exact record, never another one."""
    blob = raw_blob(client)
    for i in range(len(blob)):
        r = post_raw(client, "/v1/decode", flip(blob, i))
        assert 400 <= r.status_code < 500 or r.json()["payload"] == "some record to corrupt", (i, r.status_code)
    for cut in range(len(blob)):
        r = post_raw(client, "/v1/decode", blob[:cut])
        assert 400 <= r.status_code < 500, (cut, r.text)
    r = post_raw(client, "/v1/decode", blob + b"\0")
    assert r.status_code == 422 and r.json()["error"] == "CorruptBlobError"


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


# -- hostile input: every class is a 4xx with a message, and the same replica answers afterwards ----------

JSON = {"content-type": "application/json"}
RAW = {"content-type": "application/octet-stream"}
DEEP = b"[" * 100_000 + b"]" * 100_000
DEEP_STORED = b"[" * 20_000 + b"]" * 20_000  # within MAX_OUTPUT: the decoder must parse it
ENVELOPE = {"format": 1, "encoder": "stub", "fidelity": "lossless", "kind": "text", "length": 1, "crc32": "00000000",
            "body": ""}


def nbmf_b64(blob: bytes) -> str:
    return base64.b64encode(blob).decode()


def _sha(text: bytes) -> str:
    import hashlib

    return hashlib.sha256(text).hexdigest()


LIBRARY = (422,)  # a blob the library refuses, or that decodes to a value JSON cannot carry
HOSTILE = {
    "malformed-json": ("/v1/encode_batch", {"content": b'{"items": [', "headers": JSON}, 400),
    "empty-json": ("/v1/decode", {"content": b"", "headers": JSON}, 400),
    "empty-batch-body": ("/v1/encode_batch", {"content": b"", "headers": JSON}, 400),
    "non-utf8-json": ("/v1/encode", {"content": b'{"payload": "\xff\xfe"}', "headers": JSON}, 400),
    "utf16-garbage": ("/v1/decode_batch", {"content": b"\xfe\xff\x00\x7b", "headers": JSON}, 400),
    "text-plain": ("/v1/decode_batch", {"content": b'{"blobs": ["AA=="]}', "headers": {"content-type": "text/plain"}}, 415),
    "no-content-type": ("/v1/decode", {"content": b"{}"}, 415),
    "record-id-int": ("/v1/encode", {"json": {"payload": "x", "record_id": 5}}, 422),
    "items-not-list": ("/v1/encode_batch", {"json": {"items": "x"}}, 422),
    "blobs-wrong-types": ("/v1/decode_batch", {"json": {"blobs": [1, [2], None]}}, 422),
    "fidelity-int": ("/v1/encode", {"json": {"payload": "x", "fidelity": 7}}, 422),
    "blob-not-base64": ("/v1/decode", {"json": "a string, not base64"}, 400),
    "overflow-float": ("/v1/encode", {"content": b'{"payload": 1e999}', "headers": JSON}, 400),
    "nan": ("/v1/encode", {"content": b'{"payload": NaN}', "headers": JSON}, 400),
    "infinity-raw-json": ("/v1/encode", {"content": b"[Infinity]", "params": {"kind": "json"}, "headers": RAW}, 400),
    "5000-digit-int": ("/v1/encode", {"content": b'{"payload": ' + b"7" * 5000 + b"}", "headers": JSON}, 400),
    "huge-envelope-length": ("/v1/decode", {"json": {**ENVELOPE, "length": 10**30}}, 400),
    "huge-envelope-crc": ("/v1/decode", {"json": {**ENVELOPE, "crc32": "f" * 10_000}}, 400),
    "deep-request": ("/v1/encode", {"content": b'{"payload": ' + DEEP + b"}", "headers": JSON}, 400),
    "deep-batch": ("/v1/decode_batch", {"content": b'{"blobs": [' + DEEP + b"]}", "headers": JSON}, 400),
    "deep-raw-json": ("/v1/encode", {"content": DEEP, "params": {"kind": "json"}, "headers": RAW}, 400),
    "bytes-not-base64": ("/v1/encode", {"json": {"payload": "!!!", "kind": "bytes"}}, 422),
    "envelope-body-not-base64": ("/v1/decode", {"json": {**ENVELOPE, "body": "!!!"}}, 400),
    "count-before-schema": ("/v1/decode_batch", {"json": {"blobs": [1] * 20_000}}, 413),
    "claims-10MB": ("/v1/decode", {"content": forged(10**7), "headers": RAW}, 413),
    "batch-output-budget": ("/v1/decode_batch", {"json": {"blobs": [nbmf_b64(forged(MAX_OUTPUT))] * 3}}, 413),
    "batch-input-budget": ("/v1/encode_batch", {"json": {"items": [{"payload": "x" * 40_000}] * 2}}, 413),
    "stub-blob-deep": ("/v1/decode", {"content": stub_json_blob(DEEP_STORED), "headers": RAW}, LIBRARY),
    "stub-blob-5000-digits": ("/v1/decode", {"content": stub_json_blob(b"7" * 5000), "headers": RAW}, LIBRARY),
    "stub-blob-nan": ("/v1/decode", {"content": stub_json_blob(b"[NaN]"), "headers": RAW}, LIBRARY),
    "legacy-deep": ("/v1/decode", {"json": hostile_legacy(DEEP_STORED)}, LIBRARY),
    "legacy-5000-digits": ("/v1/decode", {"json": hostile_legacy(b"7" * 5000)}, LIBRARY),
    "legacy-nan-signed": ("/v1/decode", {"json": hostile_legacy(b"NaN", _sha(b"NaN"))}, LIBRARY),
}


@pytest.fixture(scope="module")
def ingress_replica(app_url):
    import httpx

    return httpx.get(f"{app_url}/v1/stats", timeout=60).json()["replica"]


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_input_is_4xx_and_the_service_lives_on(client, ingress_replica, name):
    path, kwargs, status = HOSTILE[name]
    r = client.post(path, **kwargs)
    assert r.status_code in (status if isinstance(status, tuple) else (status,)), (r.status_code, r.text[:300])
    body = r.json()  # strict JSON, with a message
    assert body["detail"] and "NaN" not in r.text.replace("NaN is not JSON", "")
    assert client.get("/healthz").status_code == 200
    assert client.get("/v1/stats").json()["replica"] == ingress_replica  # the same replica: it never died
    ok = client.post("/v1/encode", json={"payload": "still here", "format": "raw"})
    assert post_raw(client, "/v1/decode", ok.content).json()["payload"] == "still here"


def test_batch_budget_counts_only_what_would_be_decoded(client):
    """Blobs refused on their own (over max_output_bytes) are per-item 413s and claim nothing."""
    blobs = [nbmf_b64(forged(10**7))] * 3 + [raw_b64(client, "fine")]
    r = client.post("/v1/decode_batch", json={"blobs": blobs})
    assert r.status_code == 200, r.text
    out = r.json()["results"]
    assert [o.get("status") for o in out[:3]] == [413] * 3 and out[3]["payload"] == "fine"


def raw_b64(client, payload) -> str:
    return nbmf_b64(raw_blob(client, payload))


def test_unrepresentable_item_fails_alone(client):
    r = client.post("/v1/decode_batch", json={"blobs": [nbmf_b64(stub_json_blob(b"[NaN]")), raw_b64(client, "ok")]})
    assert r.status_code == 200, r.text
    out = json.loads(r.text)  # strict JSON: json.loads would also take NaN, so look for it
    assert "NaN" not in r.text and out["results"][1]["payload"] == "ok"
    assert out["results"][0]["status"] in LIBRARY


def test_legacy_batch_shares_the_output_budget(client, make_legacy_blob):
    """Lossless legacy blobs claim only their compressed size; each may inflate to an even share of the budget."""
    big = make_legacy_blob("a" * 60_000)  # ~100 bytes of code
    two = client.post("/v1/decode_batch", json={"blobs": [big, big]}).json()["results"]
    assert [o["payload"] for o in two] == ["a" * 60_000] * 2
    three = client.post("/v1/decode_batch", json={"blobs": [big, big, big]}).json()["results"]
    assert [o["status"] for o in three] == [413] * 3 and "/v1/decode" in three[0]["detail"]
    assert client.post("/v1/decode", json=big).json()["payload"] == "a" * 60_000  # alone it decodes
