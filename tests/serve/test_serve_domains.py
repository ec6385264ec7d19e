"""Per-domain encode routing over HTTP on real Serve: DOMAINS.json of the model dir, a per-domain canary from the
builder args, the default for every other domain; decode by the blob's version whatever its domain.

The model dir holds the released model as v1 and a relabelled copy as v2 (tests/helpers/model_dirs.py): one
model under two names, so the blob header says which version each request was routed to.
"""
from __future__ import annotations

import base64

import pytest

from helpers.model_dirs import two_versions

pytestmark = [pytest.mark.ray, pytest.mark.timeout(420)]

APP = "nbmf-domains"
TEXT = ("Meeting notes: the user asked to move the quarterly review to Thursday afternoon and wants the "
        "summary sent to the finance team before the call.")
RECORD = {"role": "user", "content": "Please remember that my preferred airline is the one with the blue logo."}


@pytest.fixture(scope="module")
def app_url(serve_base_url, tmp_path_factory):
    from ray import serve

    from serve.app import build_app
    from serve.args import AppArgs

    model_dir = two_versions(tmp_path_factory.mktemp("domain-models") / "models", {"legal": "v2"})
    args = AppArgs(model_dir=str(model_dir), replicas=1, model_num_cpus=0.1, ingress_num_cpus=0.1,
                   domains={"acme": {"candidate": "v2", "canary_share": 1.0}},
                   timeouts={"encode_s": 60.0, "decode_s": 60.0, "codec_s": 30.0})
    serve.run(build_app(args), name=APP, route_prefix="/", blocking=False)
    yield serve_base_url
    serve.delete(APP)


@pytest.fixture()
def client(app_url, http):
    return http


# domain -> version: legal has its own (DOMAINS.json), acme a canary at share 1.0, the rest the default
ROUTES = [("legal", "v2"), ("acme", "v2"), ("globex", "v1"), (None, "v1")]


@pytest.mark.parametrize("domain, version", ROUTES)
@pytest.mark.parametrize("payload", [TEXT, RECORD])
def test_encode_routes_by_domain(client, domain, version, payload):
    body = {"payload": payload, **({"domain": domain} if domain else {})}
    r = client.post("/v1/encode", json=body)
    assert r.status_code == 200, r.text
    assert r.headers["x-nbmf-version"] == version
    assert r.headers["x-nbmf-encoder"] == r.json()["encoder"] == version  # the version's model wrote it
    d = client.post("/v1/decode", json=r.json())  # decode needs no domain: the blob names its version
    assert d.status_code == 200 and (d.json()["payload"], d.json()["version"]) == (payload, version)


def test_raw_encode_takes_the_domain_as_a_query_parameter(client):
    r = client.post("/v1/encode", params={"domain": "legal", "kind": "text"}, content=TEXT.encode(),
                    headers={"content-type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    assert r.headers["x-nbmf-version"] == "v2" and r.headers["x-nbmf-encoder"] == "v2"
    d = client.post("/v1/decode", content=r.content, headers={"content-type": "application/octet-stream"})
    assert d.json()["payload"] == TEXT
    bad = client.post("/v1/encode", params={"domain": "a\tb"}, content=b"x",
                      headers={"content-type": "application/octet-stream"})
    assert bad.status_code == 422 and bad.json()["error"] == "InvalidDomain"


def test_encode_batch_routes_each_item_by_its_domain(client):
    items = [{"payload": TEXT, **({"domain": d} if d else {})} for d, _ in ROUTES]
    r = client.post("/v1/encode_batch", json={"items": items})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["version"] for x in results] == [v for _, v in ROUTES]
    assert [x["encoder"] for x in results] == [v for _, v in ROUTES]
    d = client.post("/v1/decode_batch", json={"blobs": [x["blob"] for x in results]})
    assert [x["payload"] for x in d.json()["results"]] == [TEXT] * len(ROUTES)


@pytest.mark.parametrize("domain", ["", "x" * 200, "line\nbreak"])
def test_a_bad_domain_is_a_422(client, domain):
    r = client.post("/v1/encode", json={"payload": "hi", "domain": domain})
    assert r.status_code == 422, r.text


def test_versions_and_health_show_the_domain_routing(client):
    v = client.get("/v1/versions").json()
    assert (v["current"], v["candidate"], v["canary_share"]) == ("v1", None, 0.0)
    assert v["domains"] == {"acme": {"current": "v1", "candidate": "v2", "canary_share": 1.0},
                            "legal": {"current": "v2", "candidate": None, "canary_share": 0.0}}
    h = client.get("/healthz").json()
    assert h["status"] == "ok" and h["domains"] == v["domains"]


def test_bytes_payload_of_a_domain(client):
    data = bytes(range(200)) * 2
    r = client.post("/v1/encode", json={"payload": base64.b64encode(data).decode(), "kind": "bytes",
                                        "domain": "legal"})
    assert r.status_code == 200 and r.headers["x-nbmf-version"] == "v2"
    assert client.post("/v1/decode", json=r.json()).json()["payload"] == base64.b64encode(data).decode()


def test_routing_units():
    """No Ray: a domain's router, the default for every other domain, stickiness per record id."""
    from serve.canary import CanaryRouter, Routing

    r = Routing(CanaryRouter("v1", "v2", 0.0), {"legal": CanaryRouter("v3", "v4", 0.5)})
    assert {r.choose(f"id-{i}", "acme") for i in range(50)} == {"v1"}
    legal = [r.choose(f"id-{i}", "legal") for i in range(400)]
    assert set(legal) == {"v3", "v4"} and 120 < legal.count("v4") < 280
    assert legal == [r.choose(f"id-{i}", "legal") for i in range(400)]  # sticky
    assert r.versions() == {"v1", "v2", "v3", "v4"}


def test_build_app_refuses_a_domain_version_not_held(tmp_path):
    from serve.app import build_app
    from serve.args import AppArgs

    model_dir = two_versions(tmp_path / "models")
    with pytest.raises(ValueError, match="v7 not found"):
        build_app(AppArgs(model_dir=str(model_dir), domains={"legal": {"candidate": "v7", "canary_share": 0.1}}))
    with pytest.raises(ValueError, match="domain"):
        AppArgs(domains={"": {"current": "v1"}})
