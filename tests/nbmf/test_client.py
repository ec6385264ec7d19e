"""nbmf.client without a service: 503 retries and the local fallback (a port nothing listens on), one Client shared
by several threads. The client against a real Serve app is tests/serve/test_serve_client.py."""
from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from helpers.compat_cases import LOSSLESS, SEMANTIC
from nbmf import compat
from nbmf.client import Client
from nbmf.errors import CorruptBlobError, FormatError, ServiceError, UnknownVersionError


@pytest.fixture(scope="module")
def dead_url():
    """A loopback port that refuses connections: the service is stopped."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def offline(dead_url):
    with Client(dead_url, timeout=2, retries=0, reprobe_s=0) as c:
        yield c


@pytest.mark.parametrize("payload", LOSSLESS, ids=[f"p{i}" for i in range(len(LOSSLESS))])
def test_offline_lossless_round_trip(offline, payload):
    blob = offline.encode(payload, "lossless")
    assert blob["encoder"] == "stub"  # written locally by the stub
    back = offline.decode(json.loads(json.dumps(blob)))
    assert type(back) is type(payload) and back == payload
    assert offline.stats() == {"local_encodes": 1, "local_decodes": 1, "unreachable": 2}


@pytest.mark.parametrize("payload, text", SEMANTIC, ids=[f"s{i}" for i in range(len(SEMANTIC))])
def test_offline_semantic_gives_canonical_text(offline, payload, text):
    assert offline.decode(offline.encode(payload)) == text


def test_offline_decodes_what_it_can(offline, make_legacy_blob, tiny_model_dir, sample_payloads, dead_url):
    assert offline.decode_batch([make_legacy_blob("old"), json.dumps(offline.encode("as text", "lossless"))]) == [
        "old", "as text"]
    neural = compat.ProductionNBMFEncoder(model_path=str(tiny_model_dir))
    blob = next(b for b in map(lambda p: neural.encode(p, "lossless"), sample_payloads[:40])
                if b["encoder"] == "v1" and not b["fallback"])
    with pytest.raises(UnknownVersionError):  # the stub cannot read a v1 blob: an error, never a guess
        offline.decode(blob)
    with Client(dead_url, model_path=str(tiny_model_dir), retries=0) as local_model:
        assert local_model.decode(blob) == neural.decode(blob)
    with pytest.raises(FormatError):
        offline.decode({"neither": "form"})


def test_reprobe_window_skips_the_service(dead_url):
    with Client(dead_url, retries=0, reprobe_s=3600) as c:
        c.encode("a"), c.encode("b")
    assert c.stats()["unreachable"] == 2 and c.stats()["local_encodes"] == 2


def test_concurrent_threads_share_one_offline_client(dead_url):
    payloads = [{"thread": t, "i": i, "text": f"record {t}-{i} é😀"} for t in range(8) for i in range(25)]
    with Client(dead_url, retries=0, reprobe_s=0) as c:
        def work(p):
            return c.decode(c.encode(p, "lossless"))

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(work, payloads)) == payloads
    assert c.stats()["local_encodes"] == c.stats()["local_decodes"] == len(payloads)


# -- 503s and refusals, from a scripted transport ---------------------------------------------------------
def scripted(statuses: list[int], answer):
    """A transport that answers each status in turn (then 200 with ``answer(request)``), recording the calls."""
    calls = []

    def handle(request):
        calls.append(request)
        status = statuses[len(calls) - 1] if len(calls) <= len(statuses) else 200
        if status == 200:
            return httpx.Response(200, json=answer(request))
        body = {"error": "ModelUnavailable" if status == 503 else "CorruptBlobError", "detail": "scripted"}
        return httpx.Response(status, json=body, headers={"Retry-After": "1"})

    return httpx.MockTransport(handle), calls


def echo_decode(request):
    blobs = json.loads(request.content)["blobs"]
    return {"results": [{"payload": "from the service", "kind": "text", "fidelity": "lossless", "version": "v1",
                         "truncated": False} for _ in blobs]}


def test_503_is_retried_with_backoff_then_answered(offline):
    transport, calls = scripted([503, 503], echo_decode)
    with Client("http://codec", transport=transport, retries=3, backoff_s=0) as c:
        assert c.decode(offline.encode("x")) == "from the service"
    assert len(calls) == 3 and c.stats() == {"retries": 2, "remote_decodes": 1}


def test_503_after_every_retry_falls_back_locally(offline):
    transport, calls = scripted([503] * 10, echo_decode)
    with Client("http://codec", transport=transport, retries=2, backoff_s=0) as c:
        assert c.decode(offline.encode("local", "lossless")) == "local"
    assert len(calls) == 3 and c.stats() == {"retries": 2, "unreachable": 1, "local_decodes": 1}


def test_refusals_raise_their_class_and_are_not_retried(offline):
    transport, calls = scripted([422], echo_decode)
    with Client("http://codec", transport=transport) as c:
        with pytest.raises(CorruptBlobError, match="scripted"):
            c.decode(offline.encode("x"))
    assert len(calls) == 1

    def teapot(request):
        return httpx.Response(418, json={"error": "Teapot", "detail": "no"})

    with Client("http://codec", transport=httpx.MockTransport(teapot)) as c:
        with pytest.raises(ServiceError) as e:
            c.encode("x")
    assert (e.value.status, e.value.error) == (418, "Teapot")
