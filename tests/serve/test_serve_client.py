"""nbmf.client against a real local Serve app (stub only: the neural paths are the service's, tested in
test_serve_neural.py), several threads on one Client, and blobs crossing between the service and the local
fallback. Retries and the fallback alone are in tests/nbmf/test_client.py."""
from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers.compat_cases import LOSSLESS, SEMANTIC, through_a_file
from nbmf.client import Client
from nbmf.errors import CorruptBlobError, FormatError

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]

APP = "nbmf-client"


@pytest.fixture(scope="module")
def app_url(serve_base_url, tmp_path_factory):
    from ray import serve

    from serve.app import build_app
    from serve.args import AppArgs

    args = AppArgs(model_dir=str(tmp_path_factory.mktemp("models")), replicas=1, model_num_cpus=0.1,
                   ingress_num_cpus=0.1)
    serve.run(build_app(args), name=APP, route_prefix="/", blocking=False)
    yield serve_base_url
    serve.delete(APP)


@pytest.fixture
def client(app_url):
    with Client(app_url, timeout=30, reprobe_s=0) as c:
        yield c


@pytest.fixture(scope="module")
def offline():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Client(f"http://127.0.0.1:{port}", retries=0, reprobe_s=0) as c:
        yield c


def test_round_trips_through_the_service(client, tmp_path):
    blobs = [client.encode(p, "lossless") for p in LOSSLESS]
    back = [client.decode(through_a_file(b, tmp_path)) for b in blobs]
    assert [(type(b), b) for b in back] == [(type(p), p) for p in LOSSLESS]
    assert [client.decode(client.encode(p)) for p, _ in SEMANTIC] == [text for _, text in SEMANTIC]
    assert client.decode(client.encode(b"\x00\xff", "lossless")) == b"\x00\xff"
    n = len(LOSSLESS) + len(SEMANTIC) + 1
    assert client.stats() == {"remote_encodes": n, "remote_decodes": n}  # no local fallback


def test_batch_forms(client, make_legacy_blob):
    blobs = client.encode_batch(["a", {"b": [1]}, ""], "lossless")
    mixed = [*blobs, json.dumps(blobs[0]), make_legacy_blob({"old": True}), make_legacy_blob("  old  text ", "semantic")]
    assert client.decode_batch(mixed) == ["a", {"b": [1]}, "", "a", {"old": True}, "old text"]
    assert client.stats() == {"remote_encodes": 3, "remote_decodes": 6}


def test_refusals_are_the_library_errors(client):
    with pytest.raises(FormatError):
        client.decode({"neither": "form"})
    blob = client.encode("a record that will be edited", "lossless")
    with pytest.raises(CorruptBlobError, match="blob 1 of the batch"):
        client.decode_batch([blob, {**blob, "crc32": f"{int(blob['crc32'], 16) ^ 1:08x}"}])
    assert "local_decodes" not in client.stats()


def test_blobs_cross_between_the_service_and_the_local_fallback(client, offline):
    remote = client.encode_batch([{"written": "by the service"}, "é😀"], "lossless")
    local = offline.encode_batch([{"written": "while it was down"}, "ü"], "lossless")
    assert offline.decode_batch(remote) == [{"written": "by the service"}, "é😀"]
    assert client.decode_batch(local) == [{"written": "while it was down"}, "ü"]


def test_threads_share_one_client(client):
    payloads = [{"thread": t, "i": i, "text": f"record {t}-{i} é😀"} for t in range(8) for i in range(25)]

    def work(p):
        return client.decode(client.encode(p, "lossless"))

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(work, payloads)) == payloads
    assert client.stats() == {"remote_encodes": len(payloads), "remote_decodes": len(payloads)}
