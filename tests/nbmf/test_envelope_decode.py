"""Every decode path reads a blob's JSON envelope (a dict, its JSON text or bytes) as it reads the blob itself.

The registry (``nbmf.decode``, ``decode_many``, ``inspect``), and through it migrate and collect; the CLI is in
test_cli.py, HTTP in tests/serve/test_serve_http.py.
"""
from __future__ import annotations

import json

import pytest

import nbmf
from nbmf.data.sources import iter_l2
from nbmf.data.store import SQLiteL2Store
from nbmf.errors import CorruptBlobError, FormatError, NBMFError
from nbmf.migrate import MigrateConfig, migrate
from nbmf.payload import to_raw
from nbmf.registry import Registry, as_blob

PAYLOADS = ["Remember: the user prefers metric units.", "", "héllo 😀 漢字", {"role": "user", "n": [1, 2.5, None]},
            [], None, b"\x00\xff raw"]
FORMS = {
    "dict": lambda env: env,
    "json-text": json.dumps,
    "json-bytes": lambda env: json.dumps(env).encode(),
}


@pytest.fixture(scope="module")
def reg():
    return Registry(model_dir=None)


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("payload", PAYLOADS, ids=[f"p{i}" for i in range(len(PAYLOADS))])
@pytest.mark.parametrize("fidelity", ["lossless", "semantic"])
def test_envelope_decodes_like_the_blob(reg, form, payload, fidelity):
    blob = reg.encode(payload, fidelity=fidelity)
    stored = FORMS[form](nbmf.to_envelope(blob))
    assert as_blob(stored) == blob
    assert reg.decode_result(stored) == reg.decode_result(blob)
    assert reg.inspect(stored) == reg.inspect(blob)


def test_nbmf_decode_reads_its_own_envelope():
    """The issue's reproduction: ``nbmf.decode(nbmf.to_envelope(nbmf.encode(x)))`` raised FormatError."""
    x = {"role": "user", "content": "Book a table for two at 7pm."}
    blob = nbmf.encode(x, version="stub")
    assert nbmf.decode(nbmf.to_envelope(blob)) == x
    assert nbmf.decode(json.dumps(nbmf.to_envelope(blob))) == x


def test_decode_many_mixes_every_form(reg, make_legacy_blob):
    blobs = [reg.encode("binary"), nbmf.to_envelope(reg.encode("envelope")),
             json.dumps(nbmf.to_envelope(reg.encode("text"))), make_legacy_blob("legacy"),
             json.dumps(make_legacy_blob({"legacy": "text"}))]
    results = reg.decode_many(blobs)
    assert [r.payload for r in results] == ["binary", "envelope", "text", "legacy", {"legacy": "text"}]
    assert [r.legacy for r in results] == [False, False, False, True, True]


def _edited(field, value):
    def edit(env):
        return {**env, field: value}
    return edit


BAD = {
    "empty-object": (lambda env: {}, FormatError),
    "neither-form": (lambda env: {"payload": "x"}, FormatError),
    "envelope-missing-fields": (lambda env: {"encoder": env["encoder"], "body": env["body"]}, FormatError),
    "legacy-missing-sig": (lambda env: {"meta": {}, "code": ""}, FormatError),
    "bad-base64": (_edited("body", "!!!"), FormatError),
    "bad-crc-text": (_edited("crc32", "xyz"), FormatError),
    "unknown-fidelity": (_edited("fidelity", "lossy"), FormatError),
    "format-3": (_edited("format", 3), FormatError),
    "json-text-cut": (lambda env: json.dumps(env)[:-5], FormatError),
    "body-edited": (lambda env: {**env, "body": env["body"][:-4] + "AAAA"}, CorruptBlobError),
    "length-edited": (lambda env: {**env, "length": env["length"] + 1}, CorruptBlobError),
    "crc-edited": (_edited("crc32", "00000000"), CorruptBlobError),
    "kind-edited": (_edited("kind", "json"), CorruptBlobError),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_envelopes_are_typed_errors(reg, name):
    make, error = BAD[name]
    env = nbmf.to_envelope(reg.encode("a record long enough to have a body worth editing"))
    with pytest.raises(error) as e:
        reg.decode(make(env))
    assert isinstance(e.value, NBMFError) and str(e.value)


def test_v1_envelope_checksum_is_checked_before_decoding(reg):
    from nbmf.blob import Fidelity, Kind, pack

    raw = "v1 record".encode()
    v1 = pack(encoder_id=0, fidelity=Fidelity.LOSSLESS, kind=Kind.TEXT, original_length=len(raw),
              body=reg.stub.encode_raw(raw))
    env = nbmf.to_envelope(v1)
    assert env["format"] == 1 and reg.decode(env) == "v1 record"
    with pytest.raises(CorruptBlobError):
        as_blob({**env, "crc32": "00000000"})


def test_migrate_rewrites_envelope_rows_as_blobs(tmp_path, reg):
    path = tmp_path / "l2.sqlite"
    payloads = {"env-text": "an envelope row", "env-json": {"a": [1, "é"]}}
    with SQLiteL2Store(path) as store:
        for rid, p in payloads.items():
            store.put(rid, json.dumps(nbmf.to_envelope(reg.encode(p))).encode(), encoder_version="stub")
    summary = migrate(MigrateConfig(store=path, version="stub", progress=False), registry=Registry(model_dir=None))
    assert summary["migrated"] == 2 and not summary.get("bad_rows")
    with SQLiteL2Store(path) as store:
        for row in store.iter():
            assert row.blob[:1] != b"{" and reg.decode(row.blob) == payloads[row.id]


def test_collect_reads_envelope_rows(tmp_path, reg):
    path = tmp_path / "l2.sqlite"
    with SQLiteL2Store(path) as store:
        store.put("env", json.dumps(nbmf.to_envelope(reg.encode({"k": "v"}))).encode(), encoder_version="stub")
    (rec,) = iter_l2(str(path), lambda n: None, registry=reg)
    assert rec.raw == to_raw({"k": "v"})[0] and rec.id == "env"
